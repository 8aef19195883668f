package discovery

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// AnnotationPrefix is the prefix of every annotation svcprobe reads.
const AnnotationPrefix = "svcprobe.io/"

// Annotation keys. A per-port variant of the HTTP keys appends ".<port name or number>".
const (
	AnnotationSkip       = AnnotationPrefix + "skip"        // "true": do not probe this Service
	AnnotationPorts      = AnnotationPrefix + "ports"       // "http,8080": probe only these ports
	AnnotationHTTPPath   = AnnotationPrefix + "http-path"   // "/healthz": HTTP GET instead of TCP connect
	AnnotationHTTPStatus = AnnotationPrefix + "http-status" // "200" or "200-399": accepted status codes
)

// maxAnnotationValue bounds what we parse; anything longer is malformed, not truncated.
const maxAnnotationValue = 1024

// Options are the per-Service probe options from svcprobe.io/ annotations.
type Options struct {
	Skip  bool
	Ports PortSet
	// HTTP holds HTTP probe settings by port ("" applies to every port without its own entry).
	HTTP map[string]HTTPOptions
}

// HTTPOptions turn a TCP probe into an HTTP GET.
type HTTPOptions struct {
	Path      string
	StatusMin int
	StatusMax int
}

// Accepts reports whether an HTTP status code counts as success.
func (h HTTPOptions) Accepts(code int) bool { return code >= h.StatusMin && code <= h.StatusMax }

// HTTPFor returns the HTTP options for a Service port, if that port is to be probed over HTTP.
func (o Options) HTTPFor(p Port) (HTTPOptions, bool) {
	if h, ok := o.HTTP[p.Name]; ok && p.Name != "" {
		return h, true
	}
	if h, ok := o.HTTP[strconv.Itoa(int(p.Port))]; ok {
		return h, true
	}
	h, ok := o.HTTP[""]
	return h, ok
}

// PortSet selects Service ports by name or number.
type PortSet map[string]bool

// Has reports whether p is selected.
func (s PortSet) Has(p Port) bool {
	return (p.Name != "" && s[p.Name]) || s[strconv.Itoa(int(p.Port))]
}

// AnnotationError is one malformed svcprobe.io/ annotation.
type AnnotationError struct {
	Key, Value, Problem string
}

func (e *AnnotationError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, v, e.Problem)
}

// ParseAnnotations reads the svcprobe.io/ annotations. It never fails as a whole: each malformed
// key is returned as an error and left at its default, so the Service is still probed.
func ParseAnnotations(ann map[string]string) (Options, []error) {
	var opts Options
	var errs []error
	bad := func(k, v, format string, a ...any) {
		errs = append(errs, &AnnotationError{Key: k, Value: v, Problem: fmt.Sprintf(format, a...)})
	}
	paths := map[string]string{}
	statuses := map[string]string{}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // errors in a stable order
	for _, k := range keys {
		v := ann[k]
		if len(v) > maxAnnotationValue {
			bad(k, v, "value longer than %d bytes", maxAnnotationValue)
			continue
		}
		base, port := splitPortSuffix(k)
		switch base {
		case AnnotationSkip:
			if port != "" {
				bad(k, v, "takes no port suffix")
				continue
			}
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				bad(k, v, "want true or false")
				continue
			}
			opts.Skip = b
		case AnnotationPorts:
			if port != "" {
				bad(k, v, "takes no port suffix")
				continue
			}
			set, err := parsePortSet(v)
			if err != nil {
				bad(k, v, "%v", err)
				continue
			}
			opts.Ports = set
		case AnnotationHTTPPath:
			if err := validPortRef(port); err != nil {
				bad(k, v, "%v", err)
				continue
			}
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n") {
				bad(k, v, "want an absolute URL path such as /healthz")
				continue
			}
			paths[port] = v
		case AnnotationHTTPStatus:
			if err := validPortRef(port); err != nil {
				bad(k, v, "%v", err)
				continue
			}
			if _, _, err := parseStatusRange(v); err != nil {
				bad(k, v, "%v", err)
				continue
			}
			statuses[port] = v
		default:
			bad(k, v, "unknown svcprobe.io annotation")
		}
	}
	for port, path := range paths {
		h := HTTPOptions{Path: path, StatusMin: 200, StatusMax: 399}
		s, ok := statuses[port]
		if !ok {
			s, ok = statuses[""]
		}
		if ok {
			h.StatusMin, h.StatusMax, _ = parseStatusRange(s)
		}
		if opts.HTTP == nil {
			opts.HTTP = map[string]HTTPOptions{}
		}
		opts.HTTP[port] = h
	}
	for port := range statuses {
		if _, ok := paths[port]; !ok && port != "" {
			if _, all := paths[""]; !all {
				errs = append(errs, &AnnotationError{Key: AnnotationHTTPStatus + "." + port, Value: statuses[port], Problem: "no http-path for this port: status ignored"})
			}
		}
	}
	return opts, errs
}

// splitPortSuffix splits "svcprobe.io/http-path.web" into ("svcprobe.io/http-path", "web").
func splitPortSuffix(k string) (string, string) {
	name := strings.TrimPrefix(k, AnnotationPrefix)
	base, port, _ := strings.Cut(name, ".")
	return AnnotationPrefix + base, port
}

func validPortRef(p string) error {
	if p == "" {
		return nil
	}
	if n, err := strconv.Atoi(p); err == nil {
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %d out of range", n)
		}
		return nil
	}
	if strings.Trim(p, "0123456789") == "" {
		// Digits that Atoi rejects overflow an int: a number out of range, not a port name.
		return fmt.Errorf("port %.20s out of range", p)
	}
	if len(p) > 63 || !isPortName(p) {
		return fmt.Errorf("port suffix %q is neither a port number nor a port name", p)
	}
	return nil
}

func isPortName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func parsePortSet(v string) (PortSet, error) {
	set := PortSet{}
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if err := validPortRef(f); err != nil {
			return nil, err
		}
		set[f] = true
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("empty port list")
	}
	return set, nil
}

func parseStatusRange(v string) (int, int, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(v), "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return 0, 0, fmt.Errorf("want a status code such as 200 or a range such as 200-399")
	}
	b := a
	if isRange {
		if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return 0, 0, fmt.Errorf("want a status code such as 200 or a range such as 200-399")
		}
	}
	if a < 100 || b > 599 || a > b {
		return 0, 0, fmt.Errorf("status range %d-%d outside 100-599 or reversed", a, b)
	}
	return a, b, nil
}
