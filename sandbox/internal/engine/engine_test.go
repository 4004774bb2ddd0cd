package engine

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"

	"github.com/moby/moby/api/pkg/stdcopy"
)

// A multiplexed stream comes out as the plugin wrote it, stdout and stderr interleaved
// in order, with no frame headers.
func TestDemux(t *testing.T) {
	var mux bytes.Buffer
	frame := func(stream stdcopy.StdType, s string) {
		// The engine's framing: stream, three zero bytes, the size (big-endian), the bytes.
		mux.Write([]byte{byte(stream), 0, 0, 0})
		_ = binary.Write(&mux, binary.BigEndian, uint32(len(s)))
		mux.WriteString(s)
	}
	frame(stdcopy.Stdout, "listening\n")
	frame(stdcopy.Stderr, "warning: slow\n")
	frame(stdcopy.Stdout, "served\n")
	r := Demux(io.NopCloser(&mux))
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "listening\nwarning: slow\nserved\n" {
		t.Errorf("Demux = %q, %v", got, err)
	}
}

// The same environment renders to the same request, whatever the map's order.
func TestEnvSorted(t *testing.T) {
	env := map[string]string{"PORT": "8080", "B": "2", "A": "1=x"}
	want := []string{"A=1=x", "B=2", "PORT=8080"}
	for range 10 {
		if got := Env(env); !slices.Equal(got, want) {
			t.Fatalf("Env = %q, want %q", got, want)
		}
	}
}
