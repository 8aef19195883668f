package main

import (
	"strings"
	"testing"
)

// The config file either decodes strictly into what we use or is rejected with an error.
func FuzzParseFileConfig(f *testing.F) {
	f.Add([]byte("expect:\n- default/hostnames\n"))
	f.Add([]byte("expect: default/hostnames\n"))
	f.Add([]byte("expcet: []\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fc, err := parseFileConfig(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		c := testConfig(t) // valid in every other respect
		c.ExpectFlags = fc.Expect
		// load() must sort every entry into accepted or a clear error, never panic.
		for _, e := range fc.Expect {
			if ns, name, ok := strings.Cut(e, "/"); ok && ns != "" && name != "" && !strings.Contains(name, "/") {
				continue
			}
			if c.load() == nil {
				t.Fatalf("malformed expect %q accepted", e)
			}
			return
		}
		if err := c.load(); err != nil {
			t.Fatalf("well-formed expect list %q rejected: %v", fc.Expect, err)
		}
	})
}
