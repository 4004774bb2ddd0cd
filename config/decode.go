package config

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// decoder evaluates attributes into Go values and accumulates diagnostics. Every helper
// leaves dst untouched unless the attribute is present and valid, so defaults survive.
type decoder struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
}

func (d *decoder) errorf(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func (d *decoder) append(diags hcl.Diagnostics) {
	d.diags = append(d.diags, diags...)
}

// value evaluates attrs[name] into dst, a pointer to a type gocty understands. It returns
// the attribute when it is present and decoded, nil otherwise (absent, or an error
// that has been recorded).
func (d *decoder) value(attrs hcl.Attributes, name string, dst any, want string) *hcl.Attribute {
	attr, ok := attrs[name]
	if !ok {
		return nil
	}
	val, diags := attr.Expr.Value(d.ctx)
	d.append(diags)
	if diags.HasErrors() {
		return nil
	}
	if !val.IsWhollyKnown() {
		return nil // only after an error already reported (e.g. a syntax error)
	}
	if val.IsNull() {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "must not be null; use %s", want)
		return nil
	}
	ty, err := gocty.ImpliedType(dst)
	if err != nil {
		panic(fmt.Sprintf("config: bad decode target for %s: %v", name, err))
	}
	cv, err := convert.Convert(val, ty)
	if err == nil {
		err = gocty.FromCtyValue(cv, dst)
	}
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "must be %s", want)
		return nil
	}
	return attr
}

func (d *decoder) str(attrs hcl.Attributes, name string, dst *string) *hcl.Attribute {
	return d.value(attrs, name, dst, "a string")
}

func (d *decoder) boolean(attrs hcl.Attributes, name string, dst *bool) *hcl.Attribute {
	return d.value(attrs, name, dst, "true or false")
}

func (d *decoder) strList(attrs hcl.Attributes, name string, dst *[]string) *hcl.Attribute {
	return d.value(attrs, name, dst, "a list of strings")
}

func (d *decoder) strMap(attrs hcl.Attributes, name string, dst *map[string]string) *hcl.Attribute {
	return d.value(attrs, name, dst, "a map of strings")
}

// nonEmpty decodes a string that must not be empty.
func (d *decoder) nonEmpty(attrs hcl.Attributes, name string, dst *string, example string) *hcl.Attribute {
	var s string
	attr := d.str(attrs, name, &s)
	if attr == nil {
		return nil
	}
	if s == "" {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "must not be empty; use e.g. %s", example)
		return nil
	}
	*dst = s
	return attr
}

// oneOf decodes a string that must be one of allowed.
func (d *decoder) oneOf(attrs hcl.Attributes, name string, dst *string, allowed ...string) *hcl.Attribute {
	var s string
	attr := d.str(attrs, name, &s)
	if attr == nil {
		return nil
	}
	for _, a := range allowed {
		if s == a {
			*dst = s
			return attr
		}
	}
	d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use %s", s, quoteOr(allowed))
	return nil
}

// integer decodes a whole number in [lo, hi].
func integer[T int | int64](d *decoder, attrs hcl.Attributes, name string, dst *T, lo, hi int64) *hcl.Attribute {
	var n int64
	attr := d.value(attrs, name, &n, "a whole number")
	if attr == nil {
		return nil
	}
	if n < lo || n > hi {
		allowed := fmt.Sprintf("%d to %d", lo, hi)
		if hi >= math.MaxInt32 {
			allowed = fmt.Sprintf("%d or more", lo)
		}
		d.errorf(attr.Expr.Range(), "Invalid "+name, "got %d; use %s", n, allowed)
		return nil
	}
	*dst = T(n)
	return attr
}

// duration decodes a Go duration string ("250ms", "5m") that must be > 0.
func (d *decoder) duration(attrs hcl.Attributes, name string, dst *time.Duration) *hcl.Attribute {
	var s string
	attr := d.str(attrs, name, &s)
	if attr == nil {
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "%q is not a duration; use e.g. \"250ms\", \"30s\" or \"5m\"", s)
		return nil
	}
	if v <= 0 {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use a duration greater than zero", s)
		return nil
	}
	*dst = v
	return attr
}

// durationOrOff decodes a Go duration string that may be "0" (off).
func (d *decoder) durationOrOff(attrs hcl.Attributes, name string, dst *time.Duration) *hcl.Attribute {
	var s string
	attr := d.str(attrs, name, &s)
	if attr == nil {
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "%q is not a duration; use e.g. \"30s\" or \"5m\", or \"0\" for never", s)
		return nil
	}
	if v < 0 {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use a duration, or \"0\" for never", s)
		return nil
	}
	if v > 0 && v < time.Second {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use at least \"1s\" (a registry is asked once per interval), or \"0\" for never", s)
		return nil
	}
	*dst = v
	return attr
}

// size decodes a go-units size (binary: "128MB" and "128MiB" both mean 128 MiB) that must be
// at least lo bytes.
func (d *decoder) size(attrs hcl.Attributes, name string, dst *int64, lo int64) *hcl.Attribute {
	var s string
	attr := d.str(attrs, name, &s)
	if attr == nil {
		return nil
	}
	v, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid "+name, "%q is not a size; use e.g. \"128MiB\"", s)
		return nil
	}
	if v < lo {
		if lo <= 1 {
			d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use a size greater than zero", s)
		} else {
			d.errorf(attr.Expr.Range(), "Invalid "+name, "got %q; use at least %s", s, units.BytesSize(float64(lo)))
		}
		return nil
	}
	*dst = v
	return attr
}

// elemRange is the range of the i-th element of a list expression, or the whole
// expression when it is not a literal list.
func elemRange(expr hcl.Expression, i int) hcl.Range {
	if t, ok := expr.(*hclsyntax.TupleConsExpr); ok && i < len(t.Exprs) {
		return t.Exprs[i].Range()
	}
	return expr.Range()
}

// keyRange is the range of the key of a map literal entry, or the whole expression.
func keyRange(expr hcl.Expression, key string) hcl.Range {
	if o, ok := expr.(*hclsyntax.ObjectConsExpr); ok {
		for _, item := range o.Items {
			v, diags := item.KeyExpr.Value(nil)
			if !diags.HasErrors() && v.Type() == cty.String && v.IsKnown() && !v.IsNull() && v.AsString() == key {
				return item.KeyExpr.Range()
			}
		}
	}
	return expr.Range()
}

// single returns the first block of blocks and reports any further one as a duplicate.
func (d *decoder) single(blocks hcl.Blocks) *hcl.Block {
	if len(blocks) == 0 {
		return nil
	}
	for _, b := range blocks[1:] {
		d.errorf(b.DefRange, "Duplicate "+b.Type+" block",
			"only one %s block is allowed here; previous definition was at %s", b.Type, at(blocks[0].DefRange))
	}
	return blocks[0]
}

// at formats a range as FILE:LINE.
func at(r hcl.Range) string {
	return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line)
}

func quoteOr(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = fmt.Sprintf("%q", v)
	}
	if len(q) <= 1 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
