package client_test

import (
	"context"
	"errors"
	"log"

	"github.com/chatserver/chatserver/pkg/client"
)

// A bot that answers "ping" with "pong" until the server closes it for good.
func ExampleDial() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "http://127.0.0.1:8000", client.Options{
		Room:   "lobby",
		Header: client.UsernameCookie("pingbot"), // or Token: a JWT, in jwt mode
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for ev := range c.Events() {
		if ev.Type != client.TypeMessage || ev.FromHistory || ev.Body != "ping" {
			continue
		}
		ack, err := c.Send(ctx, client.Message{Body: "pong"})
		var refused *client.Error
		if errors.As(err, &refused) && refused.Code == "rate_limited" {
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		log.Printf("pong kept as %s", ack.ID)
	}
	log.Print(c.Err()) // why the server closed it (kicked, token expired)
}
