// Command bot joins a chatserver room as "timebot" and answers !time with the time.
package main

import (
	"context"
	"flag"
	"log"
	"strings"
	"time"

	"github.com/chatserver/chatserver/pkg/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8000", "the chatserver's address")
	room := flag.String("room", "lobby", "the room to join")
	flag.Parse()
	if err := run(context.Background(), *url, *room); err != nil {
		log.Fatal(err)
	}
}

// run answers each live "!time" (not the history frame's: stale) until ctx ends.
func run(ctx context.Context, url, room string) error {
	c, err := client.Dial(ctx, url, client.Options{Room: room, Header: client.UsernameCookie("timebot")})
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { _ = c.Close() }) // closes Events: ends the loop
	for ev := range c.Events() {
		if ev.Type == client.TypeMessage && !ev.FromHistory && strings.TrimSpace(ev.Body) == "!time" {
			reply := client.Message{Body: "It is " + time.Now().Format(time.RFC1123) + "."}
			if _, err := c.Send(ctx, reply); err != nil {
				log.Print(err)
			}
		}
	}
	return c.Err()
}
