package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/common/version"
	"github.com/svcprobe/svcprobe/pipeline"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeClient uses the kubeconfig when given, the in-cluster config otherwise. Every request goes
// through countFailures, so an API server that is gone or failing shows on /metrics as
// svcprobe_discovery_api_errors_total even when client-go retries quietly (a refused connection
// on a watch restart never reaches the informers' watch-error handler).
func kubeClient(kubeconfig string, failures *atomic.Uint64) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (set --kubeconfig outside a cluster): %w", err)
	}
	rc.UserAgent = "svcprobe/" + version.Version
	pipeline.TuneRESTConfig(rc)
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countFailures{rt, failures} })
	return kubernetes.NewForConfig(rc)
}

// countFailures counts requests to the API server that failed: no answer (refused, reset, timed
// out, no route) or an answer of 429, 5xx, 401 or 403. A request the client itself cancelled (a
// watch being stopped, shutdown) is not a failure.
type countFailures struct {
	next http.RoundTripper
	n    *atomic.Uint64
}

func (c countFailures) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	switch {
	case err != nil:
		if !errors.Is(err, context.Canceled) && req.Context().Err() != context.Canceled {
			c.n.Add(1)
		}
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		c.n.Add(1)
	}
	return resp, err
}
