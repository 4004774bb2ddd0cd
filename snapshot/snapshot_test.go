package snapshot_test

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/xcore/runner/snapshot"
)

const (
	oldID  = "sha256:9f3e5a7b1c2d00000000000000000000000000000000000000000000000000ff"
	newID  = "sha256:ab12cd34ef5600000000000000000000000000000000000000000000000000ee"
	secret = "s3cr3t-value"
)

func base() snapshot.Spec {
	return snapshot.Spec{
		ImageRef: "xcore-examples/hello:latest",
		ImageID:  oldID,
		Command:  []string{"/hello"},
		Env:      map[string]string{"GREETING": "hello", "BAR": "1", "TOKEN": secret, "PORT": "8080"},
		Port:     8080,
		Publish:  true,
		CPUs:     0.5,
		Memory:   128 << 20,
		Pids:     64,
		Network:  "bridge",
		ReadOnly: true,
		User:     "65532:65532",
		Services: []string{"a", "b"},
	}
}

func clone(s snapshot.Spec) snapshot.Spec {
	s.Command = slices.Clone(s.Command)
	s.Env = maps.Clone(s.Env)
	s.Services = slices.Clone(s.Services)
	s.Placement = slices.Clone(s.Placement)
	return s
}

func TestHashOrderIndependent(t *testing.T) {
	t.Parallel()
	want := snapshot.Hash(base())
	tests := []struct {
		name string
		edit func(*snapshot.Spec)
	}{
		{"env rebuilt in another order", func(s *snapshot.Spec) {
			env := map[string]string{}
			for _, k := range []string{"TOKEN", "PORT", "BAR", "GREETING"} {
				env[k] = s.Env[k]
			}
			s.Env = env
		}},
		{"services reordered and duplicated", func(s *snapshot.Spec) { s.Services = []string{"b", "a", "b", "a", "a"} }},
		{"empty placement", func(s *snapshot.Spec) { s.Placement = []string{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := clone(base())
			tt.edit(&s)
			if got := snapshot.Hash(s); got != want {
				t.Errorf("Hash = %s, want %s", got, want)
			}
			if d := snapshot.Diff(base(), s); len(d) != 0 {
				t.Errorf("Diff = %q, want none", d)
			}
		})
	}

	pairs := []struct {
		name string
		a, b snapshot.Spec
	}{
		{"nil vs empty command", snapshot.Spec{Command: nil}, snapshot.Spec{Command: []string{}}},
		{"nil vs empty env", snapshot.Spec{Env: nil}, snapshot.Spec{Env: map[string]string{}}},
		{"nil vs empty services", snapshot.Spec{Services: nil}, snapshot.Spec{Services: []string{}}},
		{"cpus 0 vs -0", snapshot.Spec{CPUs: 0}, snapshot.Spec{CPUs: math.Copysign(0, -1)}},
		{"env value vs its digest", snapshot.Spec{Env: map[string]string{"K": secret}}, snapshot.Spec{Env: map[string]string{"K": snapshot.Digest(secret)}}},
	}
	for _, tt := range pairs {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if ha, hb := snapshot.Hash(tt.a), snapshot.Hash(tt.b); ha != hb {
				t.Errorf("Hash differs: %s vs %s", ha, hb)
			}
			if d := snapshot.Diff(tt.a, tt.b); len(d) != 0 {
				t.Errorf("Diff = %q, want none", d)
			}
		})
	}
}

func TestDiffEachField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		old    func(*snapshot.Spec) // optional, applied to base() for the old side
		new    func(*snapshot.Spec)
		field  string
		reason string
	}{
		{"image id, same ref", nil, func(s *snapshot.Spec) { s.ImageID = newID },
			"image", "image xcore-examples/hello:latest now resolves to sha256:ab12cd34ef56 (was sha256:9f3e5a7b1c2d)"},
		{"image ref and id",
			func(s *snapshot.Spec) { s.ImageRef, s.ImageID = "hello:1", "sha256:"+strings.Repeat("a", 64) },
			func(s *snapshot.Spec) { s.ImageRef, s.ImageID = "hello:2", "sha256:"+strings.Repeat("b", 64) },
			"image", "image hello:1 → hello:2 (sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb)"},
		{"registry tag moved",
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageDigest = "team/hello:1.4", "sha256:ab12"+strings.Repeat("0", 60)
			},
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageID, s.ImageDigest = "team/hello:1.4", newID, "sha256:cd34"+strings.Repeat("0", 60)
			},
			"image", "registry: team/hello:1.4 moved sha256:ab1200000000 → sha256:cd3400000000"},
		{"registry ref and digest",
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageDigest = "team/hello:1.4", "sha256:ab12"+strings.Repeat("0", 60)
			},
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageID, s.ImageDigest = "team/hello:1.5", newID, "sha256:cd34"+strings.Repeat("0", 60)
			},
			"image", "image team/hello:1.4 → team/hello:1.5 (sha256:ab1200000000 → sha256:cd3400000000)"},
		{"registry image not pulled yet",
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageDigest = "team/hello:1.4", "sha256:ab12"+strings.Repeat("0", 60)
			},
			func(s *snapshot.Spec) {
				s.ImageRef, s.ImageID, s.ImageDigest = "team/hello:1.4", "unpulled:team/hello:1.4", "sha256:cd34"+strings.Repeat("0", 60)
			},
			"image", "registry: team/hello:1.4 moved sha256:ab1200000000 → sha256:cd3400000000"},
		{"command", nil, func(s *snapshot.Spec) { s.Command = []string{"/hello", "-v"} },
			"command", "command [/hello] → [/hello -v]"},
		{"command from none", func(s *snapshot.Spec) { s.Command = nil }, func(s *snapshot.Spec) { s.Command = []string{"sh", "-c", "echo hi"} },
			"command", `command [] → [sh -c "echo hi"]`},
		{"env changed", nil, func(s *snapshot.Spec) { s.Env["GREETING"] = "howdy" },
			"env.GREETING", "env GREETING changed"},
		{"secret env changed", nil, func(s *snapshot.Spec) { s.Env["TOKEN"] = secret + "-rotated" },
			"env.TOKEN", "env TOKEN changed"},
		{"env added", nil, func(s *snapshot.Spec) { s.Env["FOO"] = secret },
			"env.FOO", "env FOO added"},
		{"env removed", nil, func(s *snapshot.Spec) { delete(s.Env, "BAR") },
			"env.BAR", "env BAR removed"},
		{"env added with empty value", nil, func(s *snapshot.Spec) { s.Env["EMPTY"] = "" },
			"env.EMPTY", "env EMPTY added"},
		{"port", nil, func(s *snapshot.Spec) { s.Port = 9090 },
			"port", "port 8080 → 9090"},
		{"publish", nil, func(s *snapshot.Spec) { s.Publish = false },
			"publish", "publish true → false"},
		{"cpus", nil, func(s *snapshot.Spec) { s.CPUs = 1 },
			"supervisor.cpus", "supervisor.cpus 0.5 → 1"},
		{"memory", nil, func(s *snapshot.Spec) { s.Memory = 256 << 20 },
			"supervisor.memory", "supervisor.memory 128MiB → 256MiB"},
		{"memory below display precision", nil, func(s *snapshot.Spec) { s.Memory = 128<<20 + 1 },
			"supervisor.memory", "supervisor.memory 134217728B → 134217729B"},
		{"pids", nil, func(s *snapshot.Spec) { s.Pids = 128 },
			"supervisor.pids", "supervisor.pids 64 → 128"},
		{"network", nil, func(s *snapshot.Spec) { s.Network = "none" },
			"supervisor.network", "supervisor.network bridge → none"},
		{"read_only", nil, func(s *snapshot.Spec) { s.ReadOnly = false },
			"supervisor.read_only", "supervisor.read_only true → false"},
		{"user", nil, func(s *snapshot.Spec) { s.User = "1000:1000" },
			"supervisor.user", "supervisor.user 65532:65532 → 1000:1000"},
		{"runtime", nil, func(s *snapshot.Spec) { s.Runtime = "runsc" },
			"supervisor.runtime", `supervisor.runtime "" → runsc`},
		{"services", nil, func(s *snapshot.Spec) { s.Services = []string{"kv", "b", "a"} },
			"services", "services [a b] → [a b kv]"},
		{"placement", nil, func(s *snapshot.Spec) {
			s.Placement = []string{"node.labels.tier == plugins", "spread=node.labels.zone"}
		},
			"supervisor.placement", `supervisor.placement [] → ["node.labels.tier == plugins" spread=node.labels.zone]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old := base()
			if tt.old != nil {
				tt.old(&old)
			}
			nw := clone(old)
			tt.new(&nw)
			if snapshot.Hash(old) == snapshot.Hash(nw) {
				t.Error("Hash unchanged")
			}
			// The old side as a later runner sees it: decoded from the label.
			for _, from := range []string{"spec", "label"} {
				o := old
				if from == "label" {
					var err error
					if o, err = snapshot.Decode(snapshot.Encode(old)); err != nil {
						t.Fatal(err)
					}
				}
				cs := snapshot.Diff(o, nw)
				if len(cs) != 1 {
					t.Fatalf("Diff from %s = %q, want exactly one change", from, cs)
				}
				if cs[0].Field != tt.field {
					t.Errorf("Field = %q, want %q", cs[0].Field, tt.field)
				}
				if got := cs[0].String(); got != tt.reason {
					t.Errorf("String() from %s = %q, want %q", from, got, tt.reason)
				}
				if got := cs.String(); got != tt.reason {
					t.Errorf("Changes.String() = %q, want %q", got, tt.reason)
				}
				if strings.Contains(fmt.Sprint(cs), secret) || strings.Contains(cs.String(), secret) {
					t.Errorf("secret leaked: %q", cs)
				}
			}
		})
	}
}

func TestImageRefOnly(t *testing.T) {
	t.Parallel()
	old, nw := base(), base()
	nw.ImageRef = "xcore-examples/hello:v2"
	if snapshot.Hash(old) != snapshot.Hash(nw) {
		t.Error("ImageRef changed the Hash")
	}
	if cs := snapshot.Diff(old, nw); len(cs) != 0 || cs.String() != "" {
		t.Errorf("Diff = %q, want none", cs)
	}
}

// A registry digest explains; the image ID decides. The same image under another
// digest (an index and its platform manifest, a re-push) is the same container.
func TestImageDigestOnly(t *testing.T) {
	t.Parallel()
	a, b := base(), base()
	a.ImageDigest, b.ImageDigest = "sha256:ab12"+strings.Repeat("0", 60), "sha256:cd34"+strings.Repeat("0", 60)
	if snapshot.Hash(a) != snapshot.Hash(b) || len(snapshot.Diff(a, b)) != 0 {
		t.Errorf("a digest alone replaced a container: %q", snapshot.Diff(a, b))
	}
	got, err := snapshot.Decode(snapshot.Encode(a))
	if err != nil || got.ImageDigest != a.ImageDigest {
		t.Errorf("Decode(Encode) lost the digest: %q, %v", got.ImageDigest, err)
	}
}

func TestDiffOrder(t *testing.T) {
	t.Parallel()
	old, nw := base(), clone(base())
	nw.Services = append(nw.Services, "kv")
	nw.Runtime = "runsc"
	nw.Memory = 256 << 20
	nw.Env["ZED"] = "1"
	nw.Env["ALPHA"] = "1"
	delete(nw.Env, "GREETING")
	nw.ImageID = newID
	want := "image xcore-examples/hello:latest now resolves to sha256:ab12cd34ef56 (was sha256:9f3e5a7b1c2d); " +
		"env ALPHA added; env GREETING removed; env ZED added; supervisor.memory 128MiB → 256MiB; " +
		`supervisor.runtime "" → runsc; services [a b] → [a b kv]`
	if got := snapshot.Diff(old, nw).String(); got != want {
		t.Errorf("Diff =\n%s\nwant\n%s", got, want)
	}
}

// A spec without placement hashes as it did before placement was part of the snapshot:
// containers of the docker backend are not replaced by an upgrade of the runner. The
// value is the hash of base() computed before the field existed.
func TestHashWithoutPlacementUnchanged(t *testing.T) {
	t.Parallel()
	const before = "1f16bdbdc740e540b272eacad76559d2c67e519bb8b1064446d7fb5ab3093016"
	if got := snapshot.Hash(base()); got != before {
		t.Errorf("Hash(base()) = %s, want %s", got, before)
	}
	s := base()
	s.Placement = []string{"spread=node.labels.zone", "node.role == worker"}
	r := clone(s)
	r.Placement = []string{"node.role == worker", "spread=node.labels.zone", "node.role == worker"}
	if snapshot.Hash(s) != snapshot.Hash(r) {
		t.Error("placement is a set: order and duplicates must not matter")
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	specs := map[string]snapshot.Spec{
		"base": base(),
		"placed": func() snapshot.Spec {
			s := base()
			s.Placement = []string{"node.labels.tier == plugins", "spread=node.labels.zone"}
			return s
		}(),
		"zero":  {},
		"nan":   {CPUs: math.NaN(), Memory: math.MaxInt64, Pids: -1},
		"inf":   {CPUs: math.Inf(1)},
		"utf-8": {ImageRef: "h\xffllo", User: "\xfe", Env: map[string]string{"K\xff": "\xff"}, Services: []string{"\xff", "\xfe"}},
	}
	for name, s := range specs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			label := snapshot.Encode(s)
			if strings.Contains(label, secret) {
				t.Fatalf("label carries a secret: %s", label)
			}
			got, err := snapshot.Decode(label)
			if err != nil {
				t.Fatalf("Decode(%s): %v", label, err)
			}
			if snapshot.Hash(got) != snapshot.Hash(s) {
				t.Errorf("Hash changed through the label %s", label)
			}
			if cs := snapshot.Diff(got, s); len(cs) != 0 {
				t.Errorf("Diff(decoded, spec) = %q", cs)
			}
			if cs := snapshot.Diff(s, got); len(cs) != 0 {
				t.Errorf("Diff(spec, decoded) = %q", cs)
			}
			if got.ImageRef != s.ImageRef && name != "utf-8" {
				t.Errorf("ImageRef = %q, want %q", got.ImageRef, s.ImageRef)
			}
			if again := snapshot.Encode(got); again != label {
				t.Errorf("Encode not idempotent:\n%s\n%s", label, again)
			}
		})
	}
}

func TestDecodeGarbage(t *testing.T) {
	t.Parallel()
	valid := snapshot.Encode(base())
	for _, in := range []string{
		"",
		"not json",
		"null",
		"[]",
		"{}",
		valid[:len(valid)/2],
		valid + "x",
		valid + valid,
		`{"v":2,"cpus":"0"}`,
		`{"v":1,"cpus":"lots"}`,
		`{"v":1,"cpus":"0","env":{"TOKEN":"` + secret + `"}}`,
		`{"v":1,"cpus":"0","extra":true}`,
		`{"v":1,"cpus":"0","port":"8080"}`,
	} {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			_, err := snapshot.Decode(in)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "decode snapshot label: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks the value: %v", err)
			}
		})
	}
	if _, err := snapshot.Decode(`{"v":1,"cpus":"0"}`); err != nil {
		t.Errorf("minimal label: %v", err)
	}
}

// randSpec draws a Spec over small alphabets, so collisions between keys and services
// (the interesting cases for canonicalisation) actually happen.
func randSpec(r *rand.Rand) snapshot.Spec {
	word := func(alpha string, n int) string {
		b := make([]byte, 1+r.IntN(n))
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		return string(b)
	}
	s := snapshot.Spec{
		ImageRef: "img/" + word("abc", 4) + ":" + word("0123", 2),
		ImageID:  "sha256:" + fmt.Sprintf("%016x%016x%016x%016x", r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()),
		Port:     1 + r.IntN(65535),
		Publish:  r.IntN(2) == 0,
		CPUs:     float64(r.IntN(17)) / 4,
		Memory:   int64(r.IntN(4096)) << 20,
		Pids:     int64(r.IntN(1024)),
		Network:  []string{"bridge", "none"}[r.IntN(2)],
		ReadOnly: r.IntN(2) == 0,
		User:     []string{"", "65532:65532", "1000"}[r.IntN(3)],
		Runtime:  []string{"", "runsc"}[r.IntN(2)],
	}
	if n := r.IntN(4); n > 0 || r.IntN(2) == 0 {
		s.Command = make([]string, n)
		for i := range s.Command {
			s.Command[i] = word("/-abcv ", 6)
		}
	}
	if n := r.IntN(8); n > 0 || r.IntN(2) == 0 {
		s.Env = map[string]string{}
		for range n {
			s.Env[word("ABCDE_", 4)] = word("xyz0123456789=", 20)
		}
	}
	for range r.IntN(5) {
		s.Services = append(s.Services, word("abcd", 2))
	}
	return s
}

// rebuild returns s with maps rebuilt in a shuffled order, services shuffled with
// duplicates, and an empty command swapped between nil and [].
func rebuild(r *rand.Rand, s snapshot.Spec) snapshot.Spec {
	out := clone(s)
	if len(s.Command) == 0 {
		if s.Command == nil {
			out.Command = []string{}
		} else {
			out.Command = nil
		}
	}
	if s.Env != nil {
		keys := slices.Collect(maps.Keys(s.Env))
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		out.Env = make(map[string]string, len(keys))
		for _, k := range keys {
			out.Env[k] = s.Env[k]
		}
	}
	for range r.IntN(3) {
		if len(out.Services) > 0 {
			out.Services = append(out.Services, out.Services[r.IntN(len(out.Services))])
		}
	}
	r.Shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	return out
}

// mutations each change exactly one hashed field of a (cloned) Spec.
var mutations = []struct {
	field  string
	mutate func(r *rand.Rand, s *snapshot.Spec)
}{
	{"image", func(r *rand.Rand, s *snapshot.Spec) { s.ImageID += "0" }},
	{"command", func(r *rand.Rand, s *snapshot.Spec) { s.Command = append(s.Command, "-v") }},
	{"env.", func(r *rand.Rand, s *snapshot.Spec) { // change, add or remove one key
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		keys := slices.Sorted(maps.Keys(s.Env))
		switch {
		case len(keys) == 0 || r.IntN(3) == 0:
			s.Env["new_key"] = "v"
		case r.IntN(2) == 0:
			delete(s.Env, keys[r.IntN(len(keys))])
		default:
			k := keys[r.IntN(len(keys))]
			s.Env[k] += "!"
		}
	}},
	{"port", func(r *rand.Rand, s *snapshot.Spec) { s.Port++ }},
	{"publish", func(r *rand.Rand, s *snapshot.Spec) { s.Publish = !s.Publish }},
	{"supervisor.cpus", func(r *rand.Rand, s *snapshot.Spec) { s.CPUs += 0.25 }},
	{"supervisor.memory", func(r *rand.Rand, s *snapshot.Spec) { s.Memory += 1 + r.Int64N(1<<30) }},
	{"supervisor.pids", func(r *rand.Rand, s *snapshot.Spec) { s.Pids++ }},
	{"supervisor.network", func(r *rand.Rand, s *snapshot.Spec) {
		s.Network = map[string]string{"bridge": "none", "none": "bridge"}[s.Network]
	}},
	{"supervisor.read_only", func(r *rand.Rand, s *snapshot.Spec) { s.ReadOnly = !s.ReadOnly }},
	{"supervisor.user", func(r *rand.Rand, s *snapshot.Spec) { s.User += "1" }},
	{"supervisor.runtime", func(r *rand.Rand, s *snapshot.Spec) {
		s.Runtime = map[string]string{"": "runsc", "runsc": ""}[s.Runtime]
	}},
	{"services", func(r *rand.Rand, s *snapshot.Spec) { s.Services = append(s.Services, "zz-new") }},
}

func TestProperties(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(20240601, 42))
	for i := range 500 {
		s := randSpec(r)
		h := snapshot.Hash(s)
		if cs := snapshot.Diff(s, s); len(cs) != 0 {
			t.Fatalf("#%d: Diff(s, s) = %q", i, cs)
		}
		if re := rebuild(r, s); snapshot.Hash(re) != h || len(snapshot.Diff(s, re)) != 0 {
			t.Fatalf("#%d: rebuilt spec differs: %q\n%#v\n%#v", i, snapshot.Diff(s, re), s, re)
		}
		dec, err := snapshot.Decode(snapshot.Encode(s))
		if err != nil || snapshot.Hash(dec) != h {
			t.Fatalf("#%d: round trip: err=%v, hash equal=%v", i, err, snapshot.Hash(dec) == h)
		}
		m := mutations[r.IntN(len(mutations))]
		mut := clone(s)
		m.mutate(r, &mut)
		if snapshot.Hash(mut) == h {
			t.Fatalf("#%d: mutating %s left the Hash alone", i, m.field)
		}
		for _, old := range []snapshot.Spec{s, dec} {
			cs := snapshot.Diff(old, mut)
			if len(cs) != 1 || !strings.HasPrefix(cs[0].Field, m.field) {
				t.Fatalf("#%d: mutating %s: Diff = %q", i, m.field, cs)
			}
		}
		if re, err := snapshot.Decode(snapshot.Encode(mut)); err != nil || snapshot.Hash(re) != snapshot.Hash(mut) {
			t.Fatalf("#%d: mutated round trip: %v", i, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(snapshot.Encode(base()))
	f.Add(snapshot.Encode(snapshot.Spec{}))
	f.Add(snapshot.Encode(snapshot.Spec{CPUs: math.NaN(), Services: []string{"b", "a", "a"}}))
	f.Add(`{"v":1,"cpus":"1e3","command":null,"env":null}`)
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := snapshot.Decode(in)
		if err != nil {
			return
		}
		again, err := snapshot.Decode(snapshot.Encode(s))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if snapshot.Hash(again) != snapshot.Hash(s) {
			t.Fatal("Hash changed through Encode/Decode")
		}
		if cs := snapshot.Diff(s, again); len(cs) != 0 {
			t.Fatalf("Diff = %q", cs)
		}
	})
}

func FuzzHashStable(f *testing.F) {
	f.Add("hello:1", oldID, "/hello", "TOKEN", secret, 8080, 0.5, int64(128<<20), int64(64), "bridge", true, "65532:65532", "", "kv")
	f.Add("", "", "", "", "", 0, math.Inf(-1), int64(-1), int64(0), "", false, "", "runsc", "")
	f.Fuzz(func(t *testing.T, ref, id, arg, key, value string, port int, cpus float64, mem, pids int64,
		network string, ro bool, user, runtime, svc string) {
		s := snapshot.Spec{
			ImageRef: ref, ImageID: id, Command: []string{arg, arg},
			Env:  map[string]string{key: value, key + "2": value + value},
			Port: port, CPUs: cpus, Memory: mem, Pids: pids,
			Network: network, ReadOnly: ro, User: user, Runtime: runtime,
			Services: []string{svc, "x", svc},
		}
		dec, err := snapshot.Decode(snapshot.Encode(s))
		if err != nil {
			t.Fatalf("Decode(Encode(s)): %v", err)
		}
		if snapshot.Hash(dec) != snapshot.Hash(s) {
			t.Fatal("Hash(s) != Hash(Decode(Encode(s)))")
		}
		if cs := snapshot.Diff(dec, s); len(cs) != 0 {
			t.Fatalf("Diff = %q", cs)
		}
	})
}
