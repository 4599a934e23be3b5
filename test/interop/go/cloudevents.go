package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/extensions"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ceHeaders are the CloudEvents attributes of the NATS binding's binary mode:
// every attribute, extensions included, as a header named ce-<attribute>.
var ceHeaders = spec.WithPrefix("ce-")

// natsBinaryMessage is a binary-mode CloudEvents message read from NATS
// headers as the NATS protocol binding maps them: only ce- headers are
// attributes (datacontenttype too, as ce-datacontenttype), the payload is
// the data. The SDK's binding code turns it into an event.
type natsBinaryMessage struct {
	header nats.Header
	data   []byte
}

func (m natsBinaryMessage) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

func (m natsBinaryMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (m natsBinaryMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	version := ceHeaders.Version(m.header.Get(ceHeaders.PrefixedSpecVersionName()))
	if version == nil {
		return errors.New("no ce-specversion header, or an unknown version")
	}
	for name, values := range m.header {
		lower := strings.ToLower(name)
		if !strings.HasPrefix(lower, ceHeaders.Prefix()) || len(values) == 0 {
			continue
		}
		var err error
		if attr := version.Attribute(lower); attr != nil {
			err = w.SetAttribute(attr, values[0])
		} else {
			err = w.SetExtension(strings.TrimPrefix(lower, ceHeaders.Prefix()), values[0])
		}
		if err != nil {
			return fmt.Errorf("header %s: %w", name, err)
		}
	}
	return w.SetData(bytes.NewReader(m.data))
}

// GetAttribute and GetExtension read one attribute without building the event (binding.MessageMetadataReader).
func (m natsBinaryMessage) GetAttribute(kind spec.Kind) (spec.Attribute, interface{}) {
	version := ceHeaders.Version(m.header.Get(ceHeaders.PrefixedSpecVersionName()))
	if version == nil {
		return nil, nil
	}
	attr := version.AttributeFromKind(kind)
	if attr == nil {
		return nil, nil
	}
	if value := m.header.Get(attr.PrefixedName()); value != "" {
		return attr, value
	}
	return attr, nil
}

func (m natsBinaryMessage) GetExtension(name string) interface{} {
	if value := m.header.Get(ceHeaders.Prefix() + name); value != "" {
		return value
	}
	return nil
}

func (m natsBinaryMessage) Finish(error) error { return nil }

type cloudEvent struct {
	Stream          string `json:"stream"`
	Subject         string `json:"subject"`
	ID              string `json:"id"`
	Type            string `json:"type"`
	Source          string `json:"source"`
	SpecVersion     string `json:"specversion"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	DataBytes       int    `json:"dataBytes"`
	Traceparent     string `json:"traceparent"`
	Tracestate      string `json:"tracestate"`
}

// readCloudEvents reads every message of the given streams whose subject
// holds --match with the CloudEvents SDK: builds each event from its NATS
// headers and payload, validates it (the SDK's rules for required
// attributes), requires datacontenttype and the distributed tracing
// extension, and returns their attributes.
func readCloudEvents(ctx context.Context, args []string) (any, error) {
	var natsURL, streams, match string
	err := parseFlags("cloudevents", args, func(fs *flag.FlagSet) {
		fs.StringVar(&natsURL, "nats", "", "NATS server URL")
		fs.StringVar(&streams, "streams", "", "comma-separated stream names")
		fs.StringVar(&match, "match", "", "text the subjects of the events to read contain")
	}, "nats", "streams", "match")
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var events []cloudEvent
	for _, name := range strings.Split(streams, ",") {
		stream, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, err
		}
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			msg, err := stream.GetMsg(ctx, seq)
			if err != nil {
				return nil, fmt.Errorf("%s seq %d: %w", name, seq, err)
			}
			if !strings.Contains(msg.Subject, match) {
				continue
			}
			event, err := binding.ToEvent(ctx, natsBinaryMessage{header: msg.Header, data: msg.Data})
			if err != nil {
				return nil, fmt.Errorf("%s seq %d is not a CloudEvent: %w", name, seq, err)
			}
			if err := event.Validate(); err != nil {
				return nil, fmt.Errorf("%s seq %d is not a valid CloudEvent: %w", name, seq, err)
			}
			if event.DataContentType() == "" {
				return nil, fmt.Errorf("%s seq %d has no datacontenttype (ce-datacontenttype)", name, seq)
			}
			tracing, ok := extensions.GetDistributedTracingExtension(*event)
			if !ok {
				return nil, fmt.Errorf("%s seq %d has no distributed tracing extension (ce-traceparent)", name, seq)
			}
			events = append(events, cloudEvent{
				Stream:          name,
				Subject:         msg.Subject,
				ID:              event.ID(),
				Type:            event.Type(),
				Source:          event.Source(),
				SpecVersion:     event.SpecVersion(),
				Time:            event.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
				DataContentType: event.DataContentType(),
				DataBytes:       len(event.Data()),
				Traceparent:     tracing.TraceParent,
				Tracestate:      tracing.TraceState,
			})
		}
	}
	return map[string]any{"events": events}, nil
}
