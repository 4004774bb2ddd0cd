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

// InstanceSecret returns the runner's secret (32 random bytes kept 0600 in stateDir),
// creating it on first use. Sidecar tokens and run folder names derive from it.
func InstanceSecret(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, "secret")
	b, err := os.ReadFile(path)
	if err == nil && len(b) >= 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read runner secret: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write runner secret: %w", err)
	}
	return b, nil
}
