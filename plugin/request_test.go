package plugin

import (
	"go/build"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPrefixAndPublicPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header, path, prefix, public string
	}{
		{"/plugins/notes", "/notes/1", "/plugins/notes", "/plugins/notes/notes/1"},
		{"/plugins/notes/", "notes/1", "/plugins/notes", "/plugins/notes/notes/1"},
		{"", "/notes/1", "", "/notes/1"},        // not through the proxy
		{"//evil.test", "/x", "", "/x"},         // would be another site
		{"https://evil.test", "/x", "", "/x"},   // not a path
		{"/a\r\nSet-Cookie: x", "/x", "", "/x"}, // header injection
		{"/\\evil.test", "/x", "", "/x"},        // browsers read \ as /
		{"/plugins/a b", "/x", "", "/x"},        // not a plain path
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header["X-Forwarded-Prefix"] = []string{tc.header}
		}
		if got := Prefix(r); got != tc.prefix {
			t.Errorf("Prefix with %q = %q, want %q", tc.header, got, tc.prefix)
		}
		if got := PublicPath(r, tc.path); got != tc.public {
			t.Errorf("PublicPath(%q) with %q = %q, want %q", tc.path, tc.header, got, tc.public)
		}
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest("GET", "/", nil)
	if got := RequestID(r); got != "" {
		t.Errorf("RequestID without header = %q", got)
	}
	r.Header.Set("X-Request-Id", "abc123")
	if got := RequestID(r); got != "abc123" {
		t.Errorf("RequestID = %q", got)
	}
}

// TestStandardLibraryOnly: the kit is linked into every plugin binary; an outside
// dependency would grow every plugin image.
func TestStandardLibraryOnly(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("the kit imports %s: standard library only", imp)
		}
	}
}
