package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/labels"
)

// DefaultPageSize is how many Services one page of the matrix (and of the JSON list) shows.
const DefaultPageSize = 200

// maxPageSize bounds ?page_size= so one request cannot render the whole cluster.
const maxPageSize = 1000

// Link is a link in the page header (e.g. /metrics).
type Link struct {
	Text string
	Href string
}

// Options configures the handler. The zero value works.
type Options struct {
	Title string // page title; "svcprobe" when empty
	// Ready reports the exporter's readiness (the /-/ready logic); shown as a banner when not ready.
	Ready func() (ok bool, why string)
	// Expected Services that do not exist are listed with the verdict missing.
	Expected []metrics.Expected
	PageSize int    // rows per page; DefaultPageSize when zero
	Links    []Link // header links
	// Now is the clock for probe ages; time.Now when nil (tests pin it).
	Now func() time.Time
}

//go:embed templates/*.html templates/*.css
var assets embed.FS

// handler serves the status page and the JSON API from one store.
type handler struct {
	store *metrics.Store
	opts  Options
	tmpl  *template.Template
}

// New returns the handler for /, /status, /status/{namespace}/{service}, /api/v1/services and
// /api/v1/services/{namespace}/{name}. Mount it at "/" (it answers 404 for anything else).
func New(store *metrics.Store, opts Options) http.Handler {
	if opts.Title == "" {
		opts.Title = "svcprobe"
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &handler{store: store, opts: opts, tmpl: parseTemplates()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("GET /status", h.index)
	mux.HandleFunc("GET /status/{$}", h.index)
	mux.HandleFunc("GET /status/{namespace}/{service}", h.service)
	mux.HandleFunc("GET /api/v1/services", h.apiList)
	mux.HandleFunc("GET /api/v1/services/{namespace}/{name}", h.apiService)
	return mux
}

func parseTemplates() *template.Template {
	css, err := assets.ReadFile("templates/style.css")
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	funcs := template.FuncMap{
		"css":      func() template.CSS { return template.CSS(css) },
		"seconds":  formatSeconds,
		"age":      formatAge,
		"ago":      func(now, t time.Time) string { return formatAge(now, &t) },
		"join":     strings.Join,
		"labels":   formatLabels,
		"pageURL":  pageURL,
		"stageURL": func(ns, name string) string { return "/status/" + url.PathEscape(ns) + "/" + url.PathEscape(name) },
		"cell":     cellText,
	}
	return template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html"))
}

// filter is the query of the matrix and the list API.
type filter struct {
	Namespace string
	Query     string
	Broken    bool
	Page      int
	PageSize  int
}

func (h *handler) parseFilter(r *http.Request) filter {
	q := r.URL.Query()
	f := filter{Namespace: q.Get("namespace"), Query: strings.TrimSpace(q.Get("q")), PageSize: h.opts.PageSize, Page: 1}
	switch q.Get("broken") {
	case "1", "true", "on", "yes":
		f.Broken = true
	}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 0 {
		f.Page = n
	}
	if n, err := strconv.Atoi(q.Get("page_size")); err == nil && n > 0 {
		f.PageSize = min(n, maxPageSize)
	}
	return f
}

// row is one Service in the matrix before conversion: only the page's rows are converted.
type row struct {
	ns, name string
	broken   bool
	missing  bool // an expected Service that does not exist
}

func (f filter) match(r row, verdict, reason string) bool {
	if f.Namespace != "" && r.ns != f.Namespace {
		return false
	}
	if f.Broken && !r.broken {
		return false
	}
	if f.Query == "" {
		return true
	}
	q := strings.ToLower(f.Query)
	for _, s := range []string{r.ns + "/" + r.name, verdict, reason} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}

// listing is what both the matrix and the list API show.
type listing struct {
	ServiceList
	Namespaces []string // every namespace, for the filter's drop-down
	Filter     filter
}

func (h *handler) list(r *http.Request) listing {
	f := h.parseFilter(r)
	// The verdicts of every Service, not copies of their state: only the page's Services are
	// read (Lookup), so a page costs its own rows plus one verdict per Service.
	verdicts := h.store.Verdicts()
	seen := make(map[metrics.Expected]bool, len(verdicts))
	nsSet := map[string]bool{}
	rows := make([]row, 0, len(verdicts))
	for _, v := range verdicts {
		seen[metrics.Expected{Namespace: v.Namespace, Name: v.Name}] = true
		nsSet[v.Namespace] = true
		rw := row{ns: v.Namespace, name: v.Name, broken: v.Verdict != metrics.LayerOK && !v.Verdict.Intended()}
		if f.match(rw, string(v.Verdict), string(v.Reason)) {
			rows = append(rows, rw)
		}
	}
	for _, e := range h.opts.Expected {
		if seen[e] {
			continue
		}
		seen[e] = true
		nsSet[e.Namespace] = true
		rw := row{ns: e.Namespace, name: e.Name, broken: true, missing: true}
		if f.match(rw, string(metrics.LayerMissing), string(metrics.LayerMissing)) {
			rows = append(rows, rw)
		}
	}
	sortBrokenFirst(rows)

	l := listing{Filter: f}
	l.GeneratedAt = h.opts.Now().UTC()
	l.Ready = true
	if h.opts.Ready != nil {
		l.Ready, l.ReadyDetail = h.opts.Ready()
	}
	l.ClusterDNS = NewClusterDNS(h.store.ClusterDNS())
	l.Total, l.PageSize, l.Page = len(rows), f.PageSize, f.Page
	for _, rw := range rows {
		if rw.broken {
			l.Broken++
		}
	}
	l.Pages = max(1, (len(rows)+f.PageSize-1)/f.PageSize)
	from := min((f.Page-1)*f.PageSize, len(rows))
	to := min(from+f.PageSize, len(rows))
	l.Services = make([]Service, 0, to-from)
	for _, rw := range rows[from:to] {
		if rw.missing {
			l.Services = append(l.Services, MissingService(rw.ns, rw.name))
			continue
		}
		st, _, ok := h.store.Lookup(rw.ns, rw.name)
		if !ok { // deleted since the verdicts were read
			continue
		}
		l.Services = append(l.Services, NewService(st, nil, false))
	}
	for ns := range nsSet {
		l.Namespaces = append(l.Namespaces, ns)
	}
	slices.Sort(l.Namespaces)
	return l
}

// lookup finds one Service in the store, or an expected one that is missing.
func (h *handler) lookup(ns, name string) (Service, bool) {
	if s, cluster, ok := h.store.Lookup(ns, name); ok {
		return NewService(s, cluster, true), true
	}
	for _, e := range h.opts.Expected {
		if e.Namespace == ns && e.Name == name {
			return MissingService(ns, name), true
		}
	}
	return Service{}, false
}

// indexPage is the data of the matrix template.
type indexPage struct {
	listing
	Title  string
	Links  []Link
	Now    time.Time
	Stages []probe.Stage
	Groups []group
	Prev   string // URL of the previous page, "" on the first
	Next   string
}

// group is the rows of one namespace on the page.
type group struct {
	Namespace string
	Services  []Service
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	l := h.list(r)
	p := indexPage{listing: l, Title: h.opts.Title, Links: h.opts.Links, Now: h.opts.Now(), Stages: probe.Stages}
	for _, s := range l.Services {
		if n := len(p.Groups); n == 0 || p.Groups[n-1].Namespace != s.Namespace {
			p.Groups = append(p.Groups, group{Namespace: s.Namespace})
		}
		g := &p.Groups[len(p.Groups)-1]
		g.Services = append(g.Services, s)
	}
	if l.Page > 1 {
		p.Prev = pageURL(l.Filter, l.Page-1)
	}
	if l.Page < l.Pages {
		p.Next = pageURL(l.Filter, l.Page+1)
	}
	h.render(w, "index.html", http.StatusOK, p)
}

// servicePage is the data of the runbook walk template.
type servicePage struct {
	Title   string
	Links   []Link
	Now     time.Time
	Service Service
	Blamed  *Step
}

func (h *handler) service(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("service")
	s, ok := h.lookup(ns, name)
	if !ok {
		// Not expected and not in the store: an unwatched namespace, another shard, or a typo.
		s = MissingService(ns, name)
	}
	p := servicePage{Title: h.opts.Title, Links: h.opts.Links, Now: h.opts.Now(), Service: s}
	for i := range s.Runbook {
		if s.Runbook[i].Blamed {
			p.Blamed = &s.Runbook[i]
		}
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusNotFound
	}
	h.render(w, "service.html", code, p)
}

func (h *handler) apiList(w http.ResponseWriter, r *http.Request) {
	l := h.list(r)
	writeJSON(w, http.StatusOK, l.ServiceList)
}

func (h *handler) apiService(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	s, ok := h.lookup(ns, name)
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("Service %s/%s is not known to this exporter (not found, not watched, or another shard's)", ns, name)})
		return
	}
	writeJSON(w, http.StatusOK, s)
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n')) // nothing to do if the client went away
}

// render executes into a buffer first so a template error is a clean 500, not half a page.
func (h *handler) render(w http.ResponseWriter, name string, code int, data any) {
	var buf bytes.Buffer
	if err := h.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "rendering "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page has no script at all; say so to the browser.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

func pageURL(f filter, page int) string {
	v := url.Values{}
	if f.Namespace != "" {
		v.Set("namespace", f.Namespace)
	}
	if f.Query != "" {
		v.Set("q", f.Query)
	}
	if f.Broken {
		v.Set("broken", "1")
	}
	if f.PageSize != 0 && f.PageSize != DefaultPageSize {
		v.Set("page_size", strconv.Itoa(f.PageSize))
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/status"
	}
	return "/status?" + v.Encode()
}

func formatSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func formatAge(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
}

// cellText is what a matrix cell says: the reason, with the count when degraded, and the
// window's failing share when it holds failures the verdict counts as partial.
func cellText(s Stage) string {
	t := cellStatusText(s)
	if s.Window != nil && s.Window.State == "degraded" {
		t += fmt.Sprintf(", partial: %d%% of the last %d rounds' attempts failed", int(s.Window.FailureRatio*100+0.5), s.Window.Rounds)
	}
	return t
}

func cellStatusText(s Stage) string {
	switch s.Status {
	case StatusOK:
		return "ok"
	case StatusSkipped:
		return "skipped"
	case StatusNotProbed:
		return "not probed"
	case StatusDegraded:
		return fmt.Sprintf("%s (%d/%d)", s.Reason, s.Failing, s.Total)
	}
	return s.Reason
}

// formatLabels prints labels sorted, as a selector is written (app=hostnames,tier=web).
func formatLabels(m map[string]string) string { return labels.Set(m).String() }
