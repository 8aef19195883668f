package discovery

import (
	"cmp"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"time"
)

// contentHasher fingerprints a value by its content: every field, element and map entry (maps in
// key order), pointers by what they point to, netip.Addr by its bytes, errors by their text. What
// fmt's %v printed, without formatting: the hash of a Service was most of a build's CPU (the
// 100k-Pod bench spent 60 % of the sync's builds in fmt). Times are left out: Target keeps its
// times outside the content it versions.
type contentHasher struct{ h uint64 } // FNV-64a, inline: no []byte per string

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

var (
	addrType  = reflect.TypeFor[netip.Addr]()
	timeType  = reflect.TypeFor[time.Time]()
	errorType = reflect.TypeFor[error]()
)

func (c *contentHasher) uint(u uint64) {
	for range 8 {
		c.h = (c.h ^ (u & 0xff)) * fnvPrime64
		u >>= 8
	}
}

func (c *contentHasher) string(s string) {
	c.uint(uint64(len(s)))
	for i := range len(s) {
		c.h = (c.h ^ uint64(s[i])) * fnvPrime64
	}
}

func (c *contentHasher) value(v reflect.Value) {
	switch v.Type() {
	case addrType:
		a := v.Interface().(netip.Addr)
		b := a.As16()
		for _, x := range b {
			c.h = (c.h ^ uint64(x)) * fnvPrime64
		}
		c.uint(uint64(a.BitLen()))
		c.string(a.Zone())
		return
	case timeType:
		return
	}
	switch v.Kind() {
	case reflect.String:
		c.string(v.String())
	case reflect.Bool:
		if v.Bool() {
			c.uint(1)
		} else {
			c.uint(0)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		c.uint(uint64(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		c.uint(v.Uint())
	case reflect.Float32, reflect.Float64:
		c.uint(math.Float64bits(v.Float()))
	case reflect.Struct:
		for i := range v.NumField() {
			c.value(v.Field(i))
		}
	case reflect.Slice, reflect.Array:
		c.uint(uint64(v.Len()))
		for i := range v.Len() {
			c.value(v.Index(i))
		}
	case reflect.Map:
		c.uint(uint64(v.Len()))
		if v.Len() == 0 {
			return
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, compareKeys)
		for _, k := range keys {
			c.value(k)
			c.value(v.MapIndex(k))
		}
	case reflect.Pointer:
		if v.IsNil() {
			c.uint(0)
			return
		}
		c.uint(1)
		c.value(v.Elem())
	case reflect.Interface:
		if v.IsNil() {
			c.uint(0)
			return
		}
		c.uint(1)
		if v.Type().Implements(errorType) {
			c.string(v.Interface().(error).Error())
			return
		}
		c.value(v.Elem())
	default:
		panic("contentHasher: cannot hash a " + v.Kind().String()) // a new field of a new kind: teach it
	}
}

// compareKeys orders map keys (strings in every map of Target's content; integers too).
func compareKeys(a, b reflect.Value) int {
	if a.Kind() == reflect.String {
		return cmp.Compare(a.String(), b.String())
	}
	if a.CanInt() {
		return cmp.Compare(a.Int(), b.Int())
	}
	panic("contentHasher: map keys of kind " + a.Kind().String())
}

// contentHash hashes v's content with FNV-64a.
func contentHash(v any) uint64 {
	c := contentHasher{h: fnvOffset64}
	c.value(reflect.ValueOf(v))
	return c.h
}
