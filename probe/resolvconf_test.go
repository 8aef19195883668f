package probe

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	const kubelet = `# written by kubelet
search default.svc.cluster.local svc.cluster.local cluster.local.
nameserver 127.0.0.10
nameserver ::1
nameserver not-an-ip
nameserver 127.0.0.11
nameserver 127.0.0.12
options ndots:5 timeout:2
`
	conf, err := ParseResolvConf(strings.NewReader(kubelet))
	if err != nil {
		t.Fatal(err)
	}
	// Three nameservers at most, as glibc uses; names that are not IPs are skipped.
	wantServers := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.10:53"),
		netip.MustParseAddrPort("[::1]:53"),
		netip.MustParseAddrPort("127.0.0.11:53"),
	}
	if !slices.Equal(conf.Servers, wantServers) {
		t.Errorf("servers %v, want %v", conf.Servers, wantServers)
	}
	wantSearch := []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	if !slices.Equal(conf.Search, wantSearch) {
		t.Errorf("search %q, want %q", conf.Search, wantSearch)
	}
	if conf.Ndots != 5 {
		t.Errorf("ndots %d, want 5", conf.Ndots)
	}
}

func TestParseResolvConfDefaults(t *testing.T) {
	conf, err := ParseResolvConf(strings.NewReader("nameserver 127.0.0.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Ndots != 1 || len(conf.Search) != 0 || conf.Servers[0] != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Errorf("got %+v, want port 53, ndots 1, no search list", conf)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseResolvConfErrors(t *testing.T) {
	for name, r := range map[string]io.Reader{
		"empty":         strings.NewReader(""),
		"no nameserver": strings.NewReader("search svc.cluster.local\noptions ndots:5\n"),
		"only names":    strings.NewReader("nameserver dns.example.\n"),
		"read error":    failingReader{},
	} {
		t.Run(name, func(t *testing.T) {
			if conf, err := ParseResolvConf(r); err == nil {
				t.Errorf("want an error, got %+v", conf)
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	conf := ResolvConf{Search: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Ndots: 5}
	tests := []struct {
		conf ResolvConf
		name string
		want []string
	}{
		// Fewer dots than ndots: search list first, the name as is last.
		{conf, "hostnames.default", []string{
			"hostnames.default.default.svc.cluster.local.",
			"hostnames.default.svc.cluster.local.",
			"hostnames.default.cluster.local.",
			"hostnames.default.",
		}},
		// A trailing dot makes the name absolute: nothing else is tried.
		{conf, "hostnames.default.svc.cluster.local.", []string{"hostnames.default.svc.cluster.local."}},
		// Enough dots: the name as is first, then the search list.
		{ResolvConf{Search: []string{"svc.cluster.local"}, Ndots: 1}, "hostnames.default", []string{
			"hostnames.default.",
			"hostnames.default.svc.cluster.local.",
		}},
		// Exactly ndots dots counts as enough.
		{ResolvConf{Search: []string{"cluster.local"}, Ndots: 2}, "a.b.c", []string{"a.b.c.", "a.b.c.cluster.local."}},
		{ResolvConf{Search: []string{"cluster.local"}, Ndots: 3}, "a.b.c", []string{"a.b.c.cluster.local.", "a.b.c."}},
		// No search list: just the name.
		{ResolvConf{Ndots: 5}, "hostnames", []string{"hostnames."}},
		{conf, "", nil},
	}
	for _, tc := range tests {
		if got := tc.conf.Candidates(tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%q) with %+v = %q, want %q", tc.name, tc.conf, got, tc.want)
		}
	}
}
