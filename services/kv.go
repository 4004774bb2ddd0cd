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

// serveKV answers the kv API below /services/<name>, whose URL is the plugin's $NAME_URL:
//
//	GET|HEAD /{key}          the value, with its ETag
//	PUT      /{key}          store the body
//	POST     /{key}?incr=N   add N to an integer value atomically; answers the new value
//	DELETE   /{key}
//	GET      /?prefix=P      the keys that start with P
//
// PUT, POST and DELETE honour If-Match and If-None-Match (412 when they fail), GET
// If-None-Match (304). The first form of the API, /kv/{key} and /kv?prefix=, keeps
// working: a path whose first segment is "kv" is read that way, so a key named "kv" or
// starting with "kv/" is reached as /kv/kv/... only. rest is escaped. Every plugin has its
// own bucket (named after the plugin), so two plugins never share keys even when they
// declare the same service.
func (m *Manager) serveKV(w *recorder, r *http.Request, plugin, rest string) {
	raw, list := kvPath(rest)
	if list {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		m.kvList(w, r, plugin)
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
		m.kvGet(w, r, plugin, key)
	case http.MethodPut:
		m.kvPut(w, r, plugin, key)
	case http.MethodPost:
		m.kvIncr(w, r, plugin, key)
	case http.MethodDelete:
		m.kvDelete(w, r, plugin, key)
	default:
		methodNotAllowed(w, "GET, HEAD, PUT, POST, DELETE")
	}
}

// kvPath splits the escaped path below /services/<name> into a raw key, or list true for
// the listing. "" and "/" list; "/kv" and "/kv/{key}" are the first form of the API.
func kvPath(rest string) (raw string, list bool) {
	raw = strings.TrimPrefix(rest, "/")
	if raw == "" || raw == "kv" {
		return "", true
	}
	if k, ok := strings.CutPrefix(raw, "kv/"); ok {
		return k, false
	}
	return raw, false
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

// Errors that abort a write transaction: If-Match or If-None-Match failed; incr found no
// integer to add to.
var (
	errPrecondition = errors.New("precondition failed")
	errConflict     = errors.New("conflict")
)

func (m *Manager) kvGet(w *recorder, r *http.Request, plugin, key string) {
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
		// Preconditions are ignored when the answer would not be 2xx (RFC 9110 §13.2.1).
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("key %q not found", key))
		return
	}
	h := w.Header()
	h.Set("ETag", etagOf(val))
	switch precondition(r.Header, val, true) {
	case http.StatusNotModified:
		w.WriteHeader(http.StatusNotModified)
		return
	case http.StatusPreconditionFailed:
		preconditionFailed(w, key)
		return
	}
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
	// The condition is checked in the write transaction: bbolt runs one at a time, so no
	// other write comes between the check and the Put.
	err = m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(plugin))
		if err != nil {
			return err
		}
		if precondition(r.Header, b.Get([]byte(key)), false) != 0 {
			return errPrecondition
		}
		return b.Put([]byte(key), val)
	})
	if errors.Is(err, errPrecondition) {
		preconditionFailed(w, key)
		return
	}
	if err != nil {
		kvFailed(w, err)
		return
	}
	w.Header().Set("ETag", etagOf(val))
	w.WriteHeader(http.StatusNoContent)
}

// kvIncr adds ?incr=N (a signed 64-bit integer) to the key's value and answers the new
// value, the bytes a GET now returns: a counter without lost updates and without a
// retry loop. A missing key counts as 0. The value must be a decimal integer (spaces
// around it are ignored; it is stored back without them); anything else, or a sum that
// overflows int64, answers 409 and leaves the value as it was.
func (m *Manager) kvIncr(w *recorder, r *http.Request, plugin, key string) {
	q := r.URL.Query()
	if !q.Has("incr") {
		writeProblem(w, http.StatusBadRequest, "POST to a key needs ?incr=N: add the integer N to its value")
		return
	}
	delta, err := strconv.ParseInt(q.Get("incr"), 10, 64)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("incr=%q is not an integer", q.Get("incr")))
		return
	}
	var next []byte
	var conflict string
	err = m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(plugin))
		if err != nil {
			return err
		}
		cur := b.Get([]byte(key))
		if precondition(r.Header, cur, false) != 0 {
			return errPrecondition
		}
		var n int64
		if cur != nil {
			if n, err = strconv.ParseInt(strings.TrimSpace(string(cur)), 10, 64); err != nil {
				conflict = fmt.Sprintf("key %q does not hold an integer: incr needs a decimal int64 value", key)
				return errConflict
			}
		}
		sum := n + delta
		if (delta > 0 && sum < n) || (delta < 0 && sum > n) {
			conflict = fmt.Sprintf("key %q: %d + %d overflows int64", key, n, delta)
			return errConflict
		}
		next = strconv.AppendInt(nil, sum, 10)
		return b.Put([]byte(key), next)
	})
	switch {
	case errors.Is(err, errConflict):
		writeProblem(w, http.StatusConflict, conflict)
		return
	case errors.Is(err, errPrecondition):
		preconditionFailed(w, key)
		return
	case err != nil:
		kvFailed(w, err)
		return
	}
	h := w.Header()
	h.Set("ETag", etagOf(next))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(next)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(next)
}

func (m *Manager) kvDelete(w *recorder, r *http.Request, plugin, key string) {
	err := m.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(plugin))
		var cur []byte
		if b != nil {
			cur = b.Get([]byte(key))
		}
		if precondition(r.Header, cur, false) != 0 {
			return errPrecondition
		}
		if b == nil {
			return nil // nothing stored yet: deleting is still a success
		}
		return b.Delete([]byte(key))
	})
	if errors.Is(err, errPrecondition) {
		preconditionFailed(w, key)
		return
	}
	if err != nil {
		kvFailed(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func preconditionFailed(w http.ResponseWriter, key string) {
	writeProblem(w, http.StatusPreconditionFailed, fmt.Sprintf("key %q: If-Match or If-None-Match does not hold; GET it again for its current value and ETag", key))
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
