package admin

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateToken(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state", ".runner")
	path := filepath.Join(dir, "admin.token")

	tok, err := LoadOrCreateToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := hex.DecodeString(tok); err != nil || len(b) != 32 {
		t.Errorf("token %q is not 32 hex-encoded bytes", tok)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("token file mode %04o, want 0600", perm)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("token folder mode %04o, want 0700", st.Mode().Perm())
	}

	again, err := LoadOrCreateToken(path)
	if err != nil || again != tok {
		t.Errorf("second call: %q, %v; want the same token", again, err)
	}
	if read, err := ReadToken(path); err != nil || read != tok {
		t.Errorf("ReadToken: %q, %v", read, err)
	}
	other, err := LoadOrCreateToken(filepath.Join(t.TempDir(), "admin.token"))
	if err != nil || other == tok {
		t.Errorf("a second token file got %q, %v", other, err)
	}
}

func TestReadTokenRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ReadToken(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if _, err := LoadOrCreateToken(open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable token file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadToken(empty); err == nil {
		t.Error("an empty token file was accepted")
	}
}
