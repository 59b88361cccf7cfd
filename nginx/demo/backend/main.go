// Command backend is the demo's stand-in for an application instance
// (`make demo`): it answers every request with its own name and the path,
// so the demo shows which instance nginx sent a URL to.
//
//	backend -name b1 -addr 127.0.0.1:9001
//	curl http://127.0.0.1:9001/some/url   # b1 /some/url
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "backend", "name this instance answers with")
	addr := flag.String("addr", "127.0.0.1:9001", "listen address, host:port")
	flag.Parse()

	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Backend", *name)
			fmt.Fprintf(w, "%s %s\n", *name, r.URL.Path)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("backend %s listening on %s", *name, *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
