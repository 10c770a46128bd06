package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSubscriberRead is what counting one delivered message costs a
// fan-out subscriber once the bytes are in its buffer: the frame header, the
// run's prefix, the sequence number and send time, the bitset and the
// histogram (no syscalls, no wake-ups: those are the kernel's and the
// scheduler's share). ns/frame is per message.
func BenchmarkSubscriberRead(b *testing.B) {
	const frames = 20000
	run := "a1b2c3"
	var stream bytes.Buffer
	now := time.Now().UnixNano()
	for i := range frames {
		body := fmt.Sprintf("%s.%d.%d.%s", run, i, now, "xxxxxxxxxxxxxxxx")
		env := fmt.Sprintf(`{"id":"0192f0c4-7e17-46eb-9f1e-11f5707ea0ec","type":"message","room":"bench","client_id":7,`+
			`"username":"guest7","body":%q,"html":"<div class=\"message\" id=\"m0192f0c4-7e17-46eb-9f1e-11f5707ea0ec\" `+
			`data-client=\"7\"><span class=\"meta\"><b class=\"user\">guest7</b> <time datetime=\"2026-12-01 22:00:00\">`+
			`2026-12-01 22:00:00</time></span><span class=\"body\">%s</span></div>","datetime":"2026-12-01 22:00:00","ts":1764626400000}`,
			body, body)
		stream.Write(serverFrame(env))
	}
	prefix := []byte(`"body":"` + run + ".")
	b.SetBytes(int64(stream.Len()))
	b.ResetTimer()
	for b.Loop() {
		c := &wsConn{rc: readCounter{r: bytes.NewReader(stream.Bytes())}}
		c.br = bufio.NewReaderSize(&c.rc, 16<<10)
		s := &subscriber{c: c,
			seen: make([]uint64, (frames+63)/64)}
		s.read(prefix)
		if s.n.Load() != frames || s.err != nil {
			b.Fatalf("counted %d of %d (%v)", s.n.Load(), frames, s.err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
}
