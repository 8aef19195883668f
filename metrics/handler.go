package metrics

import (
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Handler serves /metrics: the registry's families (cluster, self, histogram, Go, process,
// build info) through expfmt's encoders, then the per-Service families written directly, in the
// format negotiated with the scraper (OpenMetrics, text, or protobuf), gzip-compressed when the
// scraper accepts it. It behaves like promhttp.HandlerFor with EnableOpenMetrics and
// ContinueOnError, including the `name[]` filter.
func Handler(reg prometheus.Gatherer, svc *ServiceFamilies, log *slog.Logger) http.Handler {
	return &handler{reg: reg, svc: svc, log: log}
}

type handler struct {
	reg prometheus.Gatherer
	svc *ServiceFamilies
	log *slog.Logger
}

var gzipPool = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

func (h *handler) ServeHTTP(rsp http.ResponseWriter, req *http.Request) {
	mfs, err := h.reg.Gather()
	if err != nil {
		h.log.Error("gathering metrics", "err", err)
		if len(mfs) == 0 && h.svc == nil {
			http.Error(rsp, "error gathering metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var filter map[string]bool
	if req.URL != nil {
		if names := req.URL.Query()["name[]"]; len(names) > 0 {
			filter = make(map[string]bool, len(names))
			for _, n := range names {
				filter[n] = true
			}
		}
	}
	format := expfmt.NegotiateAccept(req.Header, expfmt.DefaultOpenMetricsAcceptedFormats()...)
	rsp.Header().Add("Vary", "Accept")
	rsp.Header().Add("Vary", "Accept-Encoding")
	rsp.Header().Set("Content-Type", string(format))
	var w io.Writer = rsp
	if acceptsGzip(req.Header.Get("Accept-Encoding")) {
		rsp.Header().Set("Content-Encoding", "gzip")
		gz := gzipPool.Get().(*gzip.Writer)
		gz.Reset(rsp)
		defer func() { _ = gz.Close(); gzipPool.Put(gz) }()
		w = gz
	}
	if err := h.write(w, format, mfs, filter); err != nil {
		// The response has started; all that is left is to say so and stop.
		h.log.Debug("writing metrics", "err", err)
	}
}

func (h *handler) write(w io.Writer, format expfmt.Format, mfs []*dto.MetricFamily, filter map[string]bool) error {
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range mfs {
		if filter != nil && !filter[mf.GetName()] {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	if h.svc != nil {
		switch format.FormatType() {
		case expfmt.TypeTextPlain, expfmt.TypeOpenMetrics:
			if err := h.svc.WriteTo(w, format.FormatType() == expfmt.TypeOpenMetrics, filter); err != nil {
				return err
			}
		default: // protobuf
			svc, _ := h.svc.gather(filter)
			for _, mf := range svc {
				if err := enc.Encode(mf); err != nil {
					return err
				}
			}
		}
	}
	if closer, ok := enc.(expfmt.Closer); ok {
		return closer.Close() // OpenMetrics' final "# EOF"
	}
	return nil
}

// acceptsGzip reads an Accept-Encoding header: gzip (or *) listed without q=0.
func acceptsGzip(h string) bool {
	for _, part := range strings.Split(h, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}
