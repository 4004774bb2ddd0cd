package services

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strconv"
	"strings"
)

// Token is the XCORE_TOKEN of generation gen of plugin. It is derived, not stored: a
// restarted runner computes the tokens of the containers it adopts, and every container
// (generation) gets its own, so a replacement rotates it.
func (m *Manager) Token(plugin string, gen int) string {
	h := hmac.New(sha256.New, m.key)
	h.Write([]byte(plugin + "/" + strconv.Itoa(gen)))
	return hex.EncodeToString(h.Sum(nil))
}

// Allow makes the token of generation gen of plugin valid (its container exists). Several
// generations may be valid at once while a replacement overlaps them.
func (m *Manager) Allow(plugin string, gen int) {
	tok := m.Token(plugin, gen)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens[plugin] == nil {
		m.tokens[plugin] = map[int]string{}
	}
	m.tokens[plugin][gen] = tok
}

// Revoke invalidates the token of generation gen of plugin (its container is gone).
func (m *Manager) Revoke(plugin string, gen int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens[plugin], gen)
	if len(m.tokens[plugin]) == 0 {
		delete(m.tokens, plugin)
	}
}

// authorized reports whether header (an Authorization value) carries a valid token of
// plugin. Only that plugin's tokens are compared, so another plugin's valid token fails;
// each comparison is constant-time and all of them are made.
func (m *Manager) authorized(plugin, header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	match := 0
	for _, valid := range m.tokens[plugin] {
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(valid))
	}
	return match == 1
}
