package taskserver

import (
	"context"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
)

// eventQueue bounds the events waiting to be forwarded; beyond it, events
// are dropped (and logged): a stuck containerd must not stall containers.
const eventQueue = 4096

// publisher forwards task events to containerd's ttrpc events service, the
// way a shim does, in order and off the caller's path.
type publisher struct {
	address string
	logger  *zap.Logger
	queue   chan *types.Envelope

	mu     sync.Mutex
	client *ttrpc.Client
}

func newPublisher(address string, logger *zap.Logger) *publisher {
	return &publisher{address: address, logger: logger, queue: make(chan *types.Envelope, eventQueue)}
}

func (p *publisher) publish(ns, topic string, ev events.Event) {
	if p == nil {
		return
	}
	a, err := typeurl.MarshalAnyToProto(ev)
	if err != nil {
		p.logger.Error("encoding event", zap.String("topic", topic), zap.Error(err))
		return
	}
	env := &types.Envelope{Timestamp: timestamppb.Now(), Namespace: ns, Topic: topic, Event: a}
	select {
	case p.queue <- env:
	default:
		p.logger.Warn("event queue full, dropping event", zap.String("topic", topic))
	}
}

// run forwards queued events until stop is closed. A failed forward is
// retried a few times with a fresh connection (containerd may restart).
func (p *publisher) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			p.closeClient()
			return
		case env := <-p.queue:
			var err error
			for attempt := range 5 {
				if err = p.forward(env); err == nil {
					break
				}
				p.closeClient()
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
				}
			}
			if err != nil {
				p.logger.Warn("forwarding event to containerd", zap.String("topic", env.Topic), zap.Error(err))
			}
		}
	}
}

func (p *publisher) forward(env *types.Envelope) error {
	c, err := p.connect()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = eventsapi.NewTTRPCEventsClient(c).Forward(ctx, &eventsapi.ForwardRequest{Envelope: env})
	return err
}

func (p *publisher) connect() (*ttrpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	conn, err := net.DialTimeout("unix", p.address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	p.client = ttrpc.NewClient(conn)
	return p.client, nil
}

func (p *publisher) closeClient() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		_ = p.client.Close()
		p.client = nil
	}
}
