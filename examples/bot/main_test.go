package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/pkg/client"
	"github.com/chatserver/chatserver/pkg/config"
	_ "github.com/chatserver/chatserver/pkg/plugins"
	"github.com/chatserver/chatserver/pkg/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The bot, against a real server: a member says !time and the bot answers
// with the time, from "timebot"; other messages get no answer.
func TestBotAnswersTime(t *testing.T) {
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	botCtx, stopBot := context.WithCancel(ctx)
	botDone := make(chan error, 1)
	go func() { botDone <- run(botCtx, ts.URL, "bots") }()

	alice, err := client.Dial(ctx, ts.URL, client.Options{Room: "bots", Header: client.UsernameCookie("alice")})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	context.AfterFunc(ctx, func() { _ = alice.Close() }) // bounds the wait for the answer below
	// The bot is in the room once the members list has it.
	for {
		ms, err := alice.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the bot never joined: members %+v", ms)
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, body := range []string{"what time is it?", "!time"} {
		if _, err := alice.Send(ctx, client.Message{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for ev := range alice.Events() {
		if ev.Type != client.TypeMessage {
			continue
		}
		got = append(got, ev.Username+": "+ev.Body)
		if ev.Username == "timebot" {
			break
		}
	}
	if len(got) != 3 || got[0] != "alice: what time is it?" || got[1] != "alice: !time" || !strings.HasPrefix(got[2], "timebot: It is ") {
		t.Fatalf("the room saw %q; want alice's two messages, then the bot's time", got)
	}
	if _, err := time.Parse(time.RFC1123, strings.TrimSuffix(strings.TrimPrefix(got[2], "timebot: It is "), ".")); err != nil {
		t.Errorf("the bot's answer has no time: %v", err)
	}
	stopBot()
	if err := <-botDone; err != nil {
		t.Errorf("run: %v", err)
	}
}
