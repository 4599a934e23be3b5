// Command interop drives the running TypeScript services through the Go SDK
// (gen/go) and JetStream, the way a Go team would use Concord. Each
// subcommand checks what it receives against what the contracts promise,
// exits 1 naming the first mismatch, and prints its findings as one JSON
// object for test/interop/*.test.ts to check again.
//
//	interop place-order --products ADDR --orders ADDR --customer ID
//	interop invalid-order --orders ADDR --request FILE
//	interop subjects
//	interop consume-order-events --nats URL [--seed FILE] --orders ADDR --order ID --durable NAME [--filter stream|events]
//	interop publish-cancelled --nats URL [--seed FILE] [--inbox-prefix PREFIX] --order ID --customer ID --reason TEXT
//	interop cloudevents --nats URL --streams NAMES --match TEXT
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

type command struct {
	usage string
	run   func(ctx context.Context, args []string) (any, error)
}

var commands = map[string]command{
	"place-order":          {"--products ADDR --orders ADDR --customer ID", placeOrder},
	"invalid-order":        {"--orders ADDR --request FILE", invalidOrder},
	"subjects":             {"", checkSubjects},
	"consume-order-events": {"--nats URL [--seed FILE] --orders ADDR --order ID --durable NAME [--filter stream|events]", consumeOrderEvents},
	"publish-cancelled":    {"--nats URL [--seed FILE] [--inbox-prefix PREFIX] --order ID --customer ID --reason TEXT", publishCancelled},
	"cloudevents":          {"--nats URL --streams NAMES --match TEXT", readCloudEvents},
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]].run == nil {
		fmt.Fprintln(os.Stderr, "usage: interop COMMAND [flags]; commands:")
		for name, c := range commands {
			fmt.Fprintf(os.Stderr, "  %s %s\n", name, c.usage)
		}
		os.Exit(2)
	}
	name := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	result, err := commands[name].run(ctx, os.Args[2:])
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop %s: %v\n", name, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fmt.Fprintf(os.Stderr, "interop %s: writing the result: %v\n", name, err)
		os.Exit(1)
	}
}

// parseFlags parses args into a new flag set and fails when a flag in
// required is empty.
func parseFlags(name string, args []string, define func(fs *flag.FlagSet), required ...string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	define(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, r := range required {
		if fs.Lookup(r).Value.String() == "" {
			return fmt.Errorf("--%s is required", r)
		}
	}
	return nil
}

// check returns an error describing what differs when got != want.
func check[T comparable](what string, got, want T) error {
	if got != want {
		return fmt.Errorf("%s: got %v, want %v", what, got, want)
	}
	return nil
}

// firstError returns the first non-nil error.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
