package lab

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// ServeHostname is the lab's serve_hostname container: an HTTP server on
// each port answering name (the Pod's name), like
// registry.k8s.io/serve_hostname.
func ServeHostname(ctx context.Context, name string, ports []int, ipv4Only bool) error {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, name)
	})
	errc := make(chan error, len(ports))
	var servers []*http.Server
	for _, p := range ports {
		s := &http.Server{Addr: ":" + strconv.Itoa(p), Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		// Both families, as a Go server listens by default; ipv4Only is the backend that forgot
		// IPv6 (the dual-stack faults).
		network := map[bool]string{true: "tcp4", false: "tcp"}[ipv4Only]
		l, err := net.Listen(network, s.Addr)
		if err != nil {
			return err
		}
		go func() { errc <- s.Serve(l) }()
		log.Printf("serve-hostname %s on %s :%d", name, network, p)
	}
	select {
	case <-ctx.Done():
		for _, s := range servers {
			_ = s.Close()
		}
		return nil
	case err := <-errc:
		return err
	}
}

// HTTPGet fetches url and returns the body (for checks from a namespace).
func HTTPGet(ctx context.Context, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	// The pure Go resolver reads the namespace's bind-mounted resolv.conf.
	tr := &http.Transport{DialContext: (&net.Dialer{Resolver: &net.Resolver{PreferGo: true}}).DialContext, DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}

// Resolve looks name up with the pure Go resolver (search path, ndots).
func Resolve(ctx context.Context, name string, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return (&net.Resolver{PreferGo: true}).LookupHost(ctx, name)
}

// APIProxy forwards TCP connections from listen (host loopback) to target
// dialed inside netns, so the admin kubeconfig works from the host.
func APIProxy(ctx context.Context, listen, netns, target string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	log.Printf("apiproxy: %s -> %s in netns %s", listen, target, netns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			u, err := dialInNetns(dctx, netns, "tcp", target)
			cancel()
			if err != nil {
				log.Printf("apiproxy: %v", err)
				return
			}
			defer u.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go pipe(u, c)
			go pipe(c, u)
			wg.Wait()
		}()
	}
}
