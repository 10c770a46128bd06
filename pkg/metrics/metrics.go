// Package metrics defines chatserver's Prometheus metrics. Each server owns a
// Metrics with its own registry (no global state), so tests can run many
// servers in one process and read their counters.
package metrics

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Metrics holds every collector. All methods are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	// Connections is the number of open WebSocket connections.
	Connections prometheus.Gauge
	// ConnectionsTotal counts accepted WebSocket connections.
	ConnectionsTotal prometheus.Counter
	// EventsIn counts inbound events by type (join, message, leave) and
	// outcome (ok, rejected, error).
	EventsIn *prometheus.CounterVec
	// FramesOut counts frames queued to clients (deliveries).
	FramesOut prometheus.Counter
	// Dropped counts clients disconnected by the server, by reason
	// (slow, too_big, idle, protocol).
	Dropped *prometheus.CounterVec
	// StepSeconds is each pipeline step's own latency, by pipeline and step.
	StepSeconds *prometheus.HistogramVec
	// StepErrors counts errors returned by each step, by pipeline, step and code.
	StepErrors *prometheus.CounterVec
	// HistoryErrors counts failed or dropped history writes.
	HistoryErrors prometheus.Counter
	// Rooms is the number of rooms with local members.
	Rooms prometheus.Gauge
	// BrokerResubscribes counts reconnections of the broker's subscription
	// (Redis restarted, connection dropped).
	BrokerResubscribes prometheus.Counter
	// BrokerRecovered counts frames read back from history after a
	// resubscription and delivered.
	BrokerRecovered prometheus.Counter
	// BrokerFallbacks counts publishes delivered on this node only because
	// the broker's backend was unreachable.
	BrokerFallbacks prometheus.Counter
	// BrokerLag is the age (now − envelope ts) of the last frame the broker
	// received, in seconds.
	BrokerLag prometheus.Gauge
	// HistoryQueueDepth is the number of history entries not yet written
	// to the store (Redis store: queued while Redis is slow or down).
	HistoryQueueDepth prometheus.Gauge
	// HistoryDropped counts history entries dropped because the write
	// queue was full (or never written before the store closed).
	HistoryDropped prometheus.Counter
	// Refused counts WebSocket handshakes refused before the upgrade by a
	// limit, by reason (conns_per_ip, handshake_rate, max_rooms, room_full).
	Refused *prometheus.CounterVec
	// stepObs caches StepSeconds' child per (pipeline, step): resolving
	// labels hashes them, and every step of every event observes.
	stepObs sync.Map // stepKey → prometheus.Observer

	// PresenceSuppressed counts online/offline events not broadcast because
	// their room was over websocket.presence_limit.
	PresenceSuppressed prometheus.Counter

	// APIUnauthorized counts server API requests refused for want of a
	// valid key, by reason (missing, invalid): a climbing invalid count is
	// someone guessing keys.
	APIUnauthorized *prometheus.CounterVec
	// RefResends counts frames resent with the ref of an accepted frame:
	// acknowledged again, not run again.
	RefResends prometheus.Counter
}

// New returns Metrics registered on a fresh registry that also carries the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatserver_connections", Help: "Open WebSocket connections.",
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_connections_total", Help: "WebSocket connections accepted.",
		}),
		EventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatserver_events_in_total", Help: "Events run through a pipeline, by kind and outcome.",
		}, []string{"kind", "outcome"}),
		FramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_frames_out_total", Help: "Frames queued to clients (deliveries).",
		}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatserver_dropped_clients_total", Help: "Clients disconnected by the server, by reason.",
		}, []string{"reason"}),
		StepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatserver_plugin_step_seconds",
			Help:    "Time each pipeline step took on its own (later steps excluded).",
			Buckets: []float64{1e-6, 5e-6, 25e-6, 100e-6, 500e-6, 2.5e-3, 10e-3, 50e-3, 250e-3, 1},
		}, []string{"pipeline", "step"}),
		StepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatserver_plugin_errors_total", Help: "Errors returned by pipeline steps, by code.",
		}, []string{"pipeline", "step", "code"}),
		HistoryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_history_errors_total", Help: "History writes that failed or were dropped.",
		}),
		Rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatserver_rooms", Help: "Rooms with members on this node.",
		}),
		BrokerResubscribes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_broker_resubscribes_total", Help: "Times the broker's subscription reconnected and resubscribed.",
		}),
		BrokerRecovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_broker_recovered_total", Help: "Frames recovered from history after a resubscription.",
		}),
		BrokerFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_broker_fallbacks_total", Help: "Publishes delivered on this node only because the broker was unreachable.",
		}),
		BrokerLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatserver_broker_lag_seconds", Help: "Age of the last frame received from the broker (now - envelope ts).",
		}),
		HistoryQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatserver_history_queue_depth", Help: "History entries waiting to be written to the store.",
		}),
		HistoryDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_history_dropped_total", Help: "History entries dropped: the write queue was full, or they were unwritten at shutdown.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatserver_refused_total", Help: "WebSocket handshakes refused by a limit, by reason.",
		}, []string{"reason"}),
		PresenceSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_presence_suppressed_total", Help: "Online/offline events not broadcast: room over websocket.presence_limit.",
		}),
		APIUnauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatserver_api_unauthorized_total", Help: "Server API requests refused with 401, by reason (missing, invalid).",
		}, []string{"reason"}),
		RefResends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatserver_ref_resends_total", Help: "Frames resent with the ref of an accepted frame: acknowledged again, not delivered again.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.ConnectionsTotal, m.EventsIn, m.FramesOut, m.Dropped,
		m.StepSeconds, m.StepErrors, m.HistoryErrors, m.Rooms, m.Refused, m.PresenceSuppressed, m.RefResends,
		m.BrokerResubscribes, m.BrokerRecovered, m.BrokerFallbacks, m.BrokerLag,
		m.HistoryQueueDepth, m.HistoryDropped, m.APIUnauthorized,
	)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// ObserveStep implements pipeline.Observer.
func (m *Metrics) ObserveStep(kind pipeline.Kind, step string, d time.Duration, err error) {
	key := stepKey{kind, step}
	o, ok := m.stepObs.Load(key)
	if !ok {
		o, _ = m.stepObs.LoadOrStore(key, m.StepSeconds.WithLabelValues(string(kind), step))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
	if err != nil {
		code := pipeline.CodeInternal
		var pe *pipeline.Error
		if errors.As(err, &pe) {
			code = pe.Code
		}
		m.StepErrors.WithLabelValues(string(kind), step, code).Inc()
	}
}

type stepKey struct {
	kind pipeline.Kind
	step string
}

var _ pipeline.Observer = (*Metrics)(nil)
