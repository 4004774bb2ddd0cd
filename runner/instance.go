package runner

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ReadInstanceID returns the runner instance id of stateDir without creating one; ok is
// false when no runner has used stateDir yet.
func ReadInstanceID(stateDir string) (id string, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "runner-id"))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read runner id: %w", err)
	}
	id = strings.TrimSpace(string(b))
	return id, id != "", nil
}

// InstanceID returns the runner instance id kept in stateDir, creating it on first use.
// It scopes the runner's labels and network, so two runners on one host (or two test
// runs) never touch each other's containers, and a restarted runner finds its own.
func InstanceID(stateDir string) (string, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("create state_dir: %w", err)
	}
	if id, ok, err := ReadInstanceID(stateDir); err != nil || ok {
		return id, err
	}
	buf := make([]byte, 6)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	id := hex.EncodeToString(buf)
	if err := os.WriteFile(filepath.Join(stateDir, "runner-id"), []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write runner id: %w", err)
	}
	return id, nil
}
