package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// evalContext returns the functions every expression may call:
//
//   - env("NAME"): the value of an environment variable of the runner. An UNSET variable
//     is an error naming it (a silently empty credential is worse than a failed load);
//     a variable set to "" yields "".
//   - file("path"): the contents of a file, verbatim, relative to the directory of the
//     root config file (also from drop-in files). Regular files of at most
//     maxFileSize only: a file("/dev/zero") must fail, not eat the runner's memory.
//   - trimspace(s): s without leading and trailing white space, for
//     trimspace(file("token")) where the file ends in a newline.
//
// There are no variables.
func evalContext(rootDir string) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env":       envFunc,
			"file":      fileFunc(rootDir),
			"trimspace": stdlib.TrimSpaceFunc,
		},
	}
}

var envFunc = function.New(&function.Spec{
	Description: "Returns the value of an environment variable of the runner; an unset variable is an error.",
	Params:      []function.Parameter{{Name: "name", Type: cty.String}},
	Type:        function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		name := args[0].AsString()
		v, ok := os.LookupEnv(name)
		if !ok {
			return cty.NilVal, function.NewArgErrorf(0, "environment variable %q is not set", name)
		}
		if !utf8.ValidString(v) {
			return cty.NilVal, function.NewArgErrorf(0, "environment variable %q is not valid UTF-8", name)
		}
		return cty.StringVal(v), nil
	},
})

func fileFunc(rootDir string) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the contents of a file, relative to the directory of the root config file.",
		Params:      []function.Parameter{{Name: "path", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(rootDir, p)
			}
			b, err := readSmallFile(p)
			if err != nil {
				return cty.NilVal, function.NewArgError(0, err)
			}
			if !utf8.Valid(b) {
				return cty.NilVal, function.NewArgErrorf(0, "file %s is not valid UTF-8 text", p)
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

// maxFileSize is the largest file file() reads: enough for any credential or
// certificate, small enough that a wrong path cannot exhaust memory.
const maxFileSize = 1 << 20

// readSmallFile reads a regular file of at most maxFileSize bytes.
func readSmallFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read file %s: not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read file: %w", err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("read file %s: larger than %d bytes", p, maxFileSize)
	}
	return b, nil
}
