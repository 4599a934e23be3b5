package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"concord/gen/go/concordevents"
	ordersv1 "concord/gen/go/shop/orders/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// checkSubjects builds subjects with the generated helpers and expects every
// unsafe token value to be refused and the others, which the TypeScript
// runtime takes too, to be taken.
func checkSubjects(_ context.Context, args []string) (any, error) {
	if err := parseFlags("subjects", args, func(*flag.FlagSet) {}); err != nil {
		return nil, err
	}
	subject, err := concordevents.OrderPlacedSubject("0190a3c2-7d1e-7b4a-9c1f-2b3c4d5e6f70")
	if err != nil {
		return nil, err
	}
	fromMessage, err := concordevents.OrderCancelledSubjectOf(&ordersv1.OrderCancelled{OrderId: "o-1"})
	if err != nil {
		return nil, err
	}
	refused := map[string]string{}
	for _, bad := range []string{"", "a.b", "a*", "a>", "a b", "tab\t", "nul\x00", "del\x7f", "bom\ufeff", "nbsp\u00a0"} {
		_, err := concordevents.OrderPlacedSubject(bad)
		if err == nil {
			return nil, fmt.Errorf("OrderPlacedSubject(%q) was not refused", bad)
		}
		refused[bad] = err.Error()
	}
	var taken []string
	for _, good := range []string{"nel\u0085", "zero-width\u200b", "caf\u00e9"} {
		if _, err := concordevents.OrderPlacedSubject(good); err != nil {
			return nil, fmt.Errorf("OrderPlacedSubject(%q) was refused: %w", good, err)
		}
		taken = append(taken, good)
	}
	return map[string]any{"subject": subject, "fromMessage": fromMessage, "refused": refused, "taken": taken}, nil
}

type receivedEvent struct {
	Type         string        `json:"type"`
	Subject      string        `json:"subject"`
	ID           string        `json:"id"`
	Source       string        `json:"source"`
	Time         string        `json:"time"`
	Traceparent  string        `json:"traceparent"`
	OrderID      string        `json:"orderId"`
	CustomerID   string        `json:"customerId"`
	Lines        []orderedLine `json:"lines,omitempty"`
	Total        money         `json:"total"`
	LinesVersion int64         `json:"linesVersion,omitempty"`
}

var traceparentPattern = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// consumeOrderEvents reads SHOP_ORDERS through a durable pull consumer until
// it has OrderPlaced and OrderConfirmed of the order, decoding each message
// by its ce-type header, and checks them against the order as GetOrder
// returns it.
func consumeOrderEvents(ctx context.Context, args []string) (any, error) {
	var natsURL, seed, ordersAddr, orderID, durable string
	var filter string
	err := parseFlags("consume-order-events", args, func(fs *flag.FlagSet) {
		fs.StringVar(&natsURL, "nats", "", "NATS server URL")
		fs.StringVar(&seed, "seed", "", "nkey seed file to connect with (none: no credentials)")
		fs.StringVar(&filter, "filter", "stream", `"stream": filter on the stream's subjects; "events": on OrderPlaced's and OrderConfirmed's filter subjects`)
		fs.StringVar(&ordersAddr, "orders", "", "order service host:port")
		fs.StringVar(&orderID, "order", "", "order id")
		fs.StringVar(&durable, "durable", "", "durable consumer name")
	}, "nats", "orders", "order", "durable")
	if err != nil {
		return nil, err
	}
	if filter != "stream" && filter != "events" {
		return nil, fmt.Errorf(`--filter is "stream" or "events", not %q`, filter)
	}
	conn, err := dial(ordersAddr, "INTEROP_CUSTOMER_TOKEN")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	got, err := ordersv1.NewOrderServiceClient(conn).GetOrder(ctx, &ordersv1.GetOrderRequest{Id: orderID})
	if err != nil {
		return nil, fmt.Errorf("GetOrder: %w", err)
	}
	order := got.GetOrder()

	nc, err := connectNATS(natsURL, seed, "")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	stream := concordevents.ShopOrdersStream
	config := jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: stream.Subjects[0],
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if filter == "events" {
		config.FilterSubject = ""
		config.FilterSubjects = []string{concordevents.OrderPlacedFilterSubject, concordevents.OrderConfirmedFilterSubject}
	}
	consumer, err := js.CreateOrUpdateConsumer(ctx, stream.Name, config)
	if err != nil {
		return nil, fmt.Errorf("creating durable consumer %s on %s: %w", durable, stream.Name, err)
	}

	found := map[string]receivedEvent{}
	for len(found) < 2 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("timed out with %d of 2 events of order %s (have %v)", len(found), orderID, keys(found))
		}
		msg, err := consumer.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return nil, err
		}
		event, err := decodeOrderEvent(msg, order)
		if err != nil {
			return nil, err
		}
		if event != nil {
			found[event.Type] = *event
		}
		if err := msg.DoubleAck(ctx); err != nil {
			return nil, fmt.Errorf("acking %s: %w", msg.Subject(), err)
		}
	}
	info, err := consumer.Info(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"placed":    found[concordevents.OrderPlacedTypeName],
		"confirmed": found[concordevents.OrderConfirmedTypeName],
		"consumer":  map[string]any{"durable": info.Config.Durable, "stream": info.Stream, "ackPending": info.NumAckPending, "filters": filtersOf(info.Config)},
	}, nil
}

// filtersOf lists the subjects a consumer filters on, one or several.
func filtersOf(config jetstream.ConsumerConfig) []string {
	if config.FilterSubject != "" {
		return []string{config.FilterSubject}
	}
	return config.FilterSubjects
}

// decodeOrderEvent decodes one message by its ce-type and checks its headers
// and fields; nil for events of other orders or other types.
func decodeOrderEvent(msg jetstream.Msg, order *ordersv1.Order) (*receivedEvent, error) {
	h := msg.Headers()
	typeName := h.Get(concordevents.HeaderType)
	message, ok := concordevents.NewEvent(typeName)
	if !ok {
		return nil, fmt.Errorf("message on %s has ce-type %q, which is no event of the contracts", msg.Subject(), typeName)
	}
	if err := proto.Unmarshal(msg.Data(), message); err != nil {
		return nil, fmt.Errorf("decoding %s from %s: %w", typeName, msg.Subject(), err)
	}
	event := &receivedEvent{
		Type: typeName, Subject: msg.Subject(), ID: h.Get(concordevents.HeaderID), Source: h.Get(concordevents.HeaderSource),
		Time: h.Get(concordevents.HeaderTime), Traceparent: h.Get(concordevents.HeaderTraceparent),
	}
	var checks []error
	switch e := message.(type) {
	case *ordersv1.OrderPlaced:
		if e.GetOrderId() != order.GetId() {
			return nil, nil
		}
		event.OrderID, event.CustomerID, event.Total, event.LinesVersion = e.GetOrderId(), e.GetCustomerId(), moneyOf(e.GetTotal()), e.GetLinesVersion()
		event.Lines = linesOf(e.GetLines())
		checks = append(checks,
			check("OrderPlaced lines", fmt.Sprint(event.Lines), fmt.Sprint(linesOf(order.GetLines()))),
			check("OrderPlaced lines_version", e.GetLinesVersion(), int64(1)),
		)
	case *ordersv1.OrderConfirmed:
		if e.GetOrderId() != order.GetId() {
			return nil, nil
		}
		event.OrderID, event.CustomerID, event.Total = e.GetOrderId(), e.GetCustomerId(), moneyOf(e.GetTotal())
	default:
		return nil, nil
	}
	wantSubject, err := subjectFor(message)
	if err != nil {
		return nil, err
	}
	_, timeErr := time.Parse(time.RFC3339Nano, event.Time)
	checks = append(checks,
		check(typeName+" customer", event.CustomerID, order.GetCustomerId()),
		check(typeName+" total", event.Total, moneyOf(order.GetTotal())),
		check(typeName+" subject", event.Subject, wantSubject),
		check(typeName+" ce-specversion", h.Get(concordevents.HeaderSpecVersion), concordevents.SpecVersion),
		check(typeName+" content-type", h.Get(concordevents.HeaderContentType), concordevents.ContentType),
		check(typeName+" ce-datacontenttype", h.Get(concordevents.HeaderDataContentType), concordevents.ContentType),
		check(typeName+" ce-traceparent", h.Get(concordevents.HeaderCETraceparent), event.Traceparent),
		check(typeName+" Nats-Msg-Id", h.Get(concordevents.HeaderMsgID), event.ID),
		check(typeName+" has a ce-id", event.ID != "", true),
		check(typeName+" has a ce-source", event.Source != "", true),
		check(typeName+" traceparent is W3C", traceparentPattern.MatchString(event.Traceparent), true),
		timeErr,
	)
	if err := firstError(checks...); err != nil {
		return nil, err
	}
	return event, nil
}

func subjectFor(message proto.Message) (string, error) {
	switch e := message.(type) {
	case *ordersv1.OrderPlaced:
		return concordevents.OrderPlacedSubjectOf(e)
	case *ordersv1.OrderConfirmed:
		return concordevents.OrderConfirmedSubjectOf(e)
	}
	return "", fmt.Errorf("no subject for %T", message)
}

func keys(m map[string]receivedEvent) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// publishCancelled publishes OrderCancelled to JetStream as a Concord service
// would: subject from the generated template, CloudEvents headers, the event
// id as Nats-Msg-Id, and the binary Protobuf payload.
func publishCancelled(ctx context.Context, args []string) (any, error) {
	var natsURL, seed, inboxPrefix, orderID, customer, reason string
	err := parseFlags("publish-cancelled", args, func(fs *flag.FlagSet) {
		fs.StringVar(&natsURL, "nats", "", "NATS server URL")
		fs.StringVar(&seed, "seed", "", "nkey seed file to connect with (none: no credentials)")
		fs.StringVar(&inboxPrefix, "inbox-prefix", "", "reply inbox prefix, on which JetStream's acknowledgement comes (default _INBOX)")
		fs.StringVar(&orderID, "order", "", "order id")
		fs.StringVar(&customer, "customer", "", "customer id")
		fs.StringVar(&reason, "reason", "", "why the order was cancelled")
	}, "nats", "order", "customer")
	if err != nil {
		return nil, err
	}
	event := &ordersv1.OrderCancelled{OrderId: orderID, CustomerId: customer, Reason: reason}
	subject, err := concordevents.OrderCancelledSubjectOf(event)
	if err != nil {
		return nil, err
	}
	payload, err := proto.Marshal(event)
	if err != nil {
		return nil, err
	}
	id := uuidV7()
	msg := nats.NewMsg(subject)
	msg.Data = payload
	msg.Header.Set(concordevents.HeaderSpecVersion, concordevents.SpecVersion)
	msg.Header.Set(concordevents.HeaderID, id)
	msg.Header.Set(concordevents.HeaderType, concordevents.OrderCancelledTypeName)
	msg.Header.Set(concordevents.HeaderSource, "orders")
	msg.Header.Set(concordevents.HeaderTime, time.Now().UTC().Format(time.RFC3339Nano))
	msg.Header.Set(concordevents.HeaderDataContentType, concordevents.ContentType)
	msg.Header.Set(concordevents.HeaderContentType, concordevents.ContentType)
	traceparent := "00-" + randomHex(16) + "-" + randomHex(8) + "-01"
	msg.Header.Set(concordevents.HeaderCETraceparent, traceparent)
	msg.Header.Set(concordevents.HeaderTraceparent, traceparent)

	nc, err := connectNATS(natsURL, seed, inboxPrefix)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return nil, fmt.Errorf("publishing %s on %s: %w", concordevents.OrderCancelledTypeName, subject, err)
	}
	if err := firstError(check("stream", ack.Stream, concordevents.OrderCancelledStream), check("duplicate", ack.Duplicate, false)); err != nil {
		return nil, err
	}
	return map[string]any{"id": id, "subject": subject, "stream": ack.Stream, "sequence": ack.Sequence}, nil
}

// uuidV7 is a time-ordered UUID (RFC 9562), like the TypeScript services' event ids.
func uuidV7() string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	binary.BigEndian.PutUint64(b[0:8], uint64(time.Now().UnixMilli())<<16|binary.BigEndian.Uint64(b[0:8])&0xffff)
	b[6] = 0x70 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	s := hex.EncodeToString(b[:])
	return strings.Join([]string{s[0:8], s[8:12], s[12:16], s[16:20], s[20:32]}, "-")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// connectNATS connects as README's "Using Concord from another language" has
// it: with a user's nkey seed (nats.NkeyOptionFromSeed) when seed names one,
// and on the reply inbox that user may subscribe to when inboxPrefix names
// one (nats.CustomInboxPrefix; empty: the default _INBOX).
func connectNATS(url, seed, inboxPrefix string) (*nats.Conn, error) {
	options := []nats.Option{nats.Name("concord-interop-go")}
	if inboxPrefix != "" {
		options = append(options, nats.CustomInboxPrefix(inboxPrefix))
	}
	if seed != "" {
		nkey, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("reading the nkey seed %s: %w", seed, err)
		}
		options = append(options, nkey)
	}
	return nats.Connect(url, options...)
}
