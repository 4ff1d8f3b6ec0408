// grpc_go_peer: a grpc-go server of `sonde.test.Echo` for the end-to-end tests, the same methods
// and log lines as `grpc_peer.py serve` (so `peers::grpc_served` reads both).
//
// No codegen: messages are raw bytes. The codec registered as "proto" (the content-subtype of a
// plain `application/grpc` request) passes `*[]byte` through, and the service is a hand-written
// grpc.ServiceDesc. Built from Debian's packages only, in GOPATH mode (shared/peers.md §2.5):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpc_go_peer grpc_go_peer.go
//
// with Debian's golang-go (go1.19) and golang-google-grpc-dev (grpc-go 1.33.3).
//
//	grpc_go_peer PORT
//	    Serves on 127.0.0.1:PORT (insecure, h2c). Prints `listening PORT` once bound, then one line
//	    per call as its handler starts: `call METHOD PEER INFLIGHT` (PEER `127.0.0.1:54321`,
//	    INFLIGHT the calls in their handlers at that moment, this one included).
//
// Methods: Unary (echo; metadata `x-hold-ms` holds it that long), ServerStream (3 responses, the
// request with `0`, `1`, `2` appended), ClientStream (the requests' concatenation), BidiStream
// (each request echoed as it comes), Fail (aborts with the status named by the request, e.g.
// `NOT_FOUND`; empty: NOT_FOUND), Slow (waits until the call's context ends, at most 5 s, then
// returns DEADLINE_EXCEEDED or CANCELLED as the context says, else the echo).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	service        = "sonde.test.Echo"
	streamMessages = 3
	slowLimit      = 5 * time.Second
)

// rawCodec marshals `*[]byte` as itself.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var (
	outMu    sync.Mutex
	inflight int
)

// logLine writes one line at once (handlers run on their own goroutines).
func logLine(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// track logs the call's start and returns the function that ends it.
func track(ctx context.Context, method string) func() {
	addr := "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr.String()
	}
	outMu.Lock()
	inflight++
	now := inflight
	fmt.Fprintf(os.Stdout, "call %s %s %d\n", method, addr, now)
	outMu.Unlock()
	return func() {
		outMu.Lock()
		inflight--
		outMu.Unlock()
	}
}

func hold(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("x-hold-ms") {
		if ms, err := strconv.Atoi(v); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
	}
}

func unary(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var req []byte
	if err := dec(&req); err != nil {
		return nil, err
	}
	defer track(ctx, "Unary")()
	hold(ctx)
	return &req, nil
}

func fail(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var req []byte
	if err := dec(&req); err != nil {
		return nil, err
	}
	defer track(ctx, "Fail")()
	name := string(req)
	if name == "" {
		name = "NOT_FOUND"
	}
	var code codes.Code
	if err := code.UnmarshalJSON([]byte(strconv.Quote(name))); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "unknown code %q", name)
	}
	return nil, status.Errorf(code, "sonde test: %s", name)
}

func slow(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var req []byte
	if err := dec(&req); err != nil {
		return nil, err
	}
	defer track(ctx, "Slow")()
	select {
	case <-ctx.Done():
	case <-time.After(slowLimit):
	}
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return nil, status.Error(codes.DeadlineExceeded, "sonde test: deadline")
	case context.Canceled:
		return nil, status.Error(codes.Canceled, "sonde test: cancelled")
	}
	return &req, nil
}

func serverStream(_ interface{}, stream grpc.ServerStream) error {
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	defer track(stream.Context(), "ServerStream")()
	for i := 0; i < streamMessages; i++ {
		resp := append(append([]byte{}, req...), []byte(strconv.Itoa(i))...)
		if err := stream.SendMsg(&resp); err != nil {
			return err
		}
	}
	return nil
}

func clientStream(_ interface{}, stream grpc.ServerStream) error {
	defer track(stream.Context(), "ClientStream")()
	var all []byte
	for {
		var req []byte
		err := stream.RecvMsg(&req)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		all = append(all, req...)
	}
	return stream.SendMsg(&all)
}

func bidiStream(_ interface{}, stream grpc.ServerStream) error {
	defer track(stream.Context(), "BidiStream")()
	for {
		var req []byte
		err := stream.RecvMsg(&req)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.SendMsg(&req); err != nil {
			return err
		}
	}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: service,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unary},
		{MethodName: "Fail", Handler: fail},
		{MethodName: "Slow", Handler: slow},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStream, ServerStreams: true},
		{StreamName: "ClientStream", Handler: clientStream, ClientStreams: true},
		{StreamName: "BidiStream", Handler: bidiStream, ServerStreams: true, ClientStreams: true},
	},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc_go_peer PORT")
		os.Exit(2)
	}
	port := os.Args[1]
	encoding.RegisterCodec(rawCodec{})
	lis, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpc_go_peer: listen: %v\n", err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	server.RegisterService(&echoDesc, struct{}{})
	logLine("listening %s", port)
	if err := server.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "grpc_go_peer: serve: %v\n", err)
		os.Exit(1)
	}
}
