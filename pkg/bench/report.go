package bench

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteText prints r for a person.
func (r *FanoutResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "fanout: %d subscribers, %d publishers, %.0f msg/s for %.0fs, compression %s (%d conns deflate)\n",
		r.Subscribers, r.Publishers, r.Rate, r.DurationS, onOff(r.Compress), r.Compressed)
	fmt.Fprintf(w, "  joined in        %.2fs\n", r.JoinS)
	fmt.Fprintf(w, "  published        %d (%.0f msg/s), rejected %d, accepted %d\n", r.Published, r.MsgsPerS, r.Rejected, r.Accepted)
	fmt.Fprintf(w, "  deliveries       %d of %d expected: lost %d (%.3f%%), duplicates %d, reordered %d, subscribers dropped %d\n",
		r.Deliveries, r.Expected, r.Lost, r.LossPct, r.Duplicates, r.Reordered, r.Disconnected)
	if r.Gaps > 0 {
		fmt.Fprintf(w, "  gap frames       %d, announcing %d missed messages\n", r.Gaps, r.GapMissed)
	}
	fmt.Fprintf(w, "  deliveries/s     %.0f\n", r.DeliveriesPS)
	fmt.Fprintf(w, "  latency ms       p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	if r.ServerCPUS > 0 || r.ServerRSSMB > 0 {
		fmt.Fprintf(w, "  server CPU       %.2fs (%.0f%% of one core), %.2f µs per delivery\n", r.ServerCPUS, r.ServerCPUPct, r.CPUPerDelivUS)
		if r.ServerWrites > 0 {
			fmt.Fprintf(w, "  server writes    %d syscalls, %.1f frames per write\n", r.ServerWrites, r.FramesPerWrite)
		}
		fmt.Fprintf(w, "  server RSS       %.1f MB (%.1f KB per connection over baseline)\n", r.ServerRSSMB, r.RSSPerConnKB)
	}
	fmt.Fprintf(w, "  generator CPU    %.0f%% of one core\n", r.GeneratorCPUPct)
	fmt.Fprintf(w, "  sustainable      %v (zero loss, nobody dropped, p99 < 200 ms)   loadavg %s\n", r.Sustainable, r.Machine.LoadAvg)
}

// WriteText prints r for a person.
func (r *ConnsResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "conns: %d connections in %d room(s), compression %s, %d source address(es)\n",
		r.Conns, r.Rooms, onOff(r.Compress), r.LocalAddrs)
	fmt.Fprintf(w, "  joined in        %.2fs (%.0f joins/s), %.1f frames per connection\n", r.JoinS, r.JoinsPerS, r.FramesPerConn)
	if r.ServerRSSMB > 0 {
		fmt.Fprintf(w, "  server RSS       %.1f MB (baseline %.1f MB): %.1f KB per connection\n", r.ServerRSSMB, r.BaseRSSMB, r.RSSPerConnKB)
		fmt.Fprintf(w, "  server CPU       %.2fs for the joins\n", r.ServerCPUS)
	}
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  node %-15s pid %d: %d members, RSS %.1f MB (baseline %.1f MB): %.1f KB per connection\n",
			n.Addr, n.PID, n.Conns, n.RSSMB, n.BaseRSSMB, n.RSSPerConnKB)
	}
	fmt.Fprintf(w, "  join             p50 %.1f ms  p99 %.1f ms  max %.1f ms per member\n", r.JoinLatency.P50, r.JoinLatency.P99, r.JoinLatency.Max)
	if c := r.Check; c != nil {
		if c.Posted+c.PostErrors > 0 {
			fmt.Fprintf(w, "  check posted     %d of %d rooms in %.2fs, %d errors %s\n", c.Posted, c.Rooms, c.PostS, c.PostErrors, c.PostError)
		}
		fmt.Fprintf(w, "  check delivered  %d of %d members: missing %d, duplicates %d, foreign %d; all in %.2fs, p50 %.1f ms p99 %.1f ms  ok %v\n",
			c.Delivered, c.Members, c.Missing, c.Duplicates, c.Foreign, c.AllDeliveredS, c.Latency.P50, c.Latency.P99, c.OK)
	}
	fmt.Fprintf(w, "  dropped          %d   loadavg %s\n", r.Disconnected, r.Machine.LoadAvg)
}

// WriteJSON prints v as one JSON line.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// WriteText prints r for a person.
func (r *RoomsResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "rooms: %d rooms × %d members (%d connections over %d server(s)), %.0f msg/s in all (%.2f per room) for %.0fs\n",
		r.Rooms, r.Members, r.Conns, r.Servers, r.Rate, r.perRoomRate(), r.DurationS)
	fmt.Fprintf(w, "  joined in        %.2fs, compression %s (%d conns deflate)\n", r.JoinS, onOff(r.Compress), r.Compressed)
	fmt.Fprintf(w, "  ingress          %d published (%.0f msg/s achieved), rejected %d, accepted %d\n", r.Published, r.MsgsPerS, r.Rejected, r.Accepted)
	fmt.Fprintf(w, "  deliveries       %d of %d expected: lost %d (%.3f%%), duplicates %d, reordered %d, misrouted %d, members dropped %d\n",
		r.Deliveries, r.Expected, r.Lost, r.LossPct, r.Duplicates, r.Reordered, r.Misrouted, r.Disconnected)
	fmt.Fprintf(w, "  deliveries/s     %.0f\n", r.DeliveriesPS)
	fmt.Fprintf(w, "  latency ms       p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	if r.ServerCPUS > 0 || r.ServerRSSMB > 0 {
		fmt.Fprintf(w, "  server CPU       %.2fs (%.0f%% of one core), %.2f µs per delivery, %.2f µs per message\n",
			r.ServerCPUS, r.ServerCPUPct, r.CPUPerDelivUS, r.CPUPerMsgUS)
		if r.ServerWrites > 0 {
			fmt.Fprintf(w, "  server writes    %d syscalls, %.2f frames per write\n", r.ServerWrites, r.FramesPerWrite)
		}
		fmt.Fprintf(w, "  server RSS       %.1f MB (%.1f KB per connection over baseline)\n", r.ServerRSSMB, r.RSSPerConnKB)
	}
	fmt.Fprintf(w, "  generator CPU    %.0f%% of one core\n", r.GeneratorCPUPct)
	fmt.Fprintf(w, "  sustainable      %v (zero loss, nothing doubled, reordered or refused, nobody dropped, ingress ≥ 97%% of the rate, p99 < 100 ms)   loadavg %s\n",
		r.Sustainable, r.Machine.LoadAvg)
}
