package agent

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/envlet/envlet/cache"
)

var unescapeSeeds = []string{
	``, `plain`, `a\nb`, `\"\\\/\b\f\n\r\t`, `\u0041\u00e9\u20ac`, `\ud83d\ude00`,
	`\ud83d`, `\ude00x`, `\ud83d\u0041`, `\ud83dx\ude00`, "caf\xc3\xa9", "bad\xff\xfeutf8", "\xed\xa0\x80",
	`-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n`, `\u00`, `\x`, `\`, `\'`,
}

// FuzzUnescapeJSON: every string unescapeJSON accepts, encoding/json
// decodes to the same bytes; one it refuses as changed, encoding/json
// stores with U+FFFD if it accepts it (a lone surrogate, bytes that are not
// UTF-8: issue 11 §3); one it refuses as bad, encoding/json refuses too.
func FuzzUnescapeJSON(f *testing.F) {
	for _, s := range unescapeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var want []string
		jerr := json.Unmarshal([]byte(`["`+raw+`"]`), &want)
		dst := make([]byte, len(raw))
		n, err := unescapeJSON(dst, []byte(raw))
		switch {
		case err == nil:
			if jerr != nil || len(want) != 1 || string(dst[:n]) != want[0] {
				t.Fatalf("unescapeJSON(%q) = %q; encoding/json gives %q, %v", raw, dst[:n], want, jerr)
			}
		case err == errChangedValue:
			// (A string JSON refuses for another reason may be refused
			// as changed first.)
			if jerr == nil && (len(want) != 1 || !strings.ContainsRune(want[0], utf8.RuneError)) {
				t.Fatalf("unescapeJSON(%q) refused it as changed; encoding/json gives %q, %v", raw, want, jerr)
			}
		default:
			if jerr == nil {
				t.Fatalf("unescapeJSON(%q) refused it (%v); encoding/json gives %q", raw, err, want)
			}
		}
	})
}

// TestUnmarshalUnescaped: the same result as json.Unmarshal, escaped
// strings anywhere (values, maps, pointers, slices), keys left alone.
func TestUnmarshalUnescaped(t *testing.T) {
	type inner struct {
		Value *string           `json:"value"`
		List  []string          `json:"list"`
		Map   map[string]string `json:"runtime"`
	}
	type doc struct {
		Name  string  `json:"name"`
		Value string  `json:"value"`
		In    inner   `json:"in"`
		Ins   []inner `json:"ins"`
		N     int     `json:"n"`
	}
	docs := []string{
		`{"name":"n","value":"v"}`,
		`{"name":"a\u0041","value":"-----BEGIN\nKEY\n-----END\n","n":3}`,
		`{"value":"\"q\"", "in":{"value":"x\ty","list":["a\\b","c","\u00e9"],"runtime":{"K\u0041":"v\nw","L":"plain"}}}`,
		`{"ins":[{"value":"\ud83d\ude00"},{"runtime":{"A":"\/"}}], "value" : "\r\n"}`,
	}
	pool := cache.NewPool()
	for _, d := range docs {
		var want, got doc
		if err := json.Unmarshal([]byte(d), &want); err != nil {
			t.Fatal(err)
		}
		if err := unmarshalUnescaped(pool, []byte(d), &got); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", d, got, want)
		}
	}
	// The registration of a workload goes through it too.
	reg, err := parseRegistration([]byte(`{"id":"w","user":"u","project":"p","match":{"uid":1},"runtime":{"PEM":"a\nb"},"execution":{"E":"\u0041"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if reg.Runtime["PEM"] != "a\nb" || reg.Execution["E"] != "A" {
		t.Fatalf("registration values = %q %q", reg.Runtime["PEM"], reg.Execution["E"])
	}
}
