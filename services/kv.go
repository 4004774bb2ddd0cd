package services

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Limits of the kv service.
const (
	maxKeyLen   = 256
	maxValueLen = 1 << 20 // 1 MiB
	maxListKeys = 1000
)

// serveKV answers the kv API below /services/<name>: GET/PUT/DELETE /kv/{key} and
// GET /kv?prefix=. rest is escaped. Every plugin has its own bucket (named after the
// plugin), so two plugins never share keys even when they declare the same service.
func (m *Manager) serveKV(w *recorder, r *http.Request, plugin, rest string) {
	if rest == "/kv" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		m.kvList(w, r, plugin)
		return
	}
	raw, ok := strings.CutPrefix(rest, "/kv/")
	if !ok {
		writeProblem(w, http.StatusNotFound, "not found: the kv service serves /kv/{key} and /kv?prefix=")
		return
	}
	key, err := url.PathUnescape(raw)
	if err == nil {
		err = checkKey(key)
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		m.kvGet(w, plugin, key)
	case http.MethodPut:
		m.kvPut(w, r, plugin, key)
	case http.MethodDelete:
		m.kvDelete(w, plugin, key)
	default:
		methodNotAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

// checkKey allows 1..maxKeyLen bytes of [A-Za-z0-9._:/-] with no ".." segment, so keys
// read as paths never escape a prefix a plugin lists by.
func checkKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("invalid key: want 1 to %d bytes, got %d", maxKeyLen, len(key))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._:/-", c) >= 0:
		default:
			return fmt.Errorf("invalid key: byte %q at %d; use A-Z a-z 0-9 . _ : / -", c, i)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == ".." {
			return errors.New(`invalid key: ".." segment`)
		}
	}
	return nil
}

func (m *Manager) kvGet(w *recorder, plugin, key string) {
	var val []byte
	err := m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(plugin)); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				val = bytes.Clone(v) // v lives only as long as the transaction
			}
		}
		return nil
	})
	if err != nil {
		kvFailed(w, err)
		return
	}
	if val == nil {
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("key %q not found", key))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(val)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(val)
}

func (m *Manager) kvPut(w *recorder, r *http.Request, plugin, key string) {
	if r.ContentLength > maxValueLen {
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value is larger than %d bytes", maxValueLen))
		return
	}
	val, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxValueLen))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value is larger than %d bytes", maxValueLen))
		return
	}
	if err != nil {
		w.err = fmt.Errorf("read value: %w", err)
		writeProblem(w, http.StatusBadRequest, "could not read the request body")
		return
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(plugin))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), val)
	})
	if err != nil {
		kvFailed(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (m *Manager) kvDelete(w *recorder, plugin, key string) {
	err := m.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(plugin)); b != nil {
			return b.Delete([]byte(key))
		}
		return nil // nothing stored yet: deleting is still a success
	})
	if err != nil {
		kvFailed(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// kvListing is the body of GET /kv. Truncated says more than maxListKeys keys matched:
// list again with a longer prefix.
type kvListing struct {
	Keys      []string `json:"keys"`
	Truncated bool     `json:"truncated,omitempty"`
}

func (m *Manager) kvList(w *recorder, r *http.Request, plugin string) {
	prefix := []byte(r.URL.Query().Get("prefix"))
	out := kvListing{Keys: []string{}}
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(plugin))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		// bbolt keeps keys sorted bytewise, so the listing comes out sorted.
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(out.Keys) == maxListKeys {
				out.Truncated = true
				break
			}
			out.Keys = append(out.Keys, string(k))
		}
		return nil
	})
	if err != nil {
		kvFailed(w, err)
		return
	}
	body, _ := json.Marshal(out)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func kvFailed(w *recorder, err error) {
	w.err = fmt.Errorf("kv store: %w", err)
	writeProblem(w, http.StatusInternalServerError, "kv store error")
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeProblem(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}
