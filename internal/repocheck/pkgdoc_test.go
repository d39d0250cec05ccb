package repocheck

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// TestPackageComments checks that every package has exactly one package
// comment among its non-test files, starting "Package NAME" (or "Command
// NAME" for mains).
func TestPackageComments(t *testing.T) {
	root := repoRoot(t)
	dirs := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 10 {
		t.Fatalf("found only %d packages; the walk is broken", len(dirs))
	}
	for dir, files := range dirs {
		rel, _ := filepath.Rel(root, dir)
		var docs []string
		var name string
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			name = af.Name.Name
			if af.Doc != nil {
				docs = append(docs, filepath.Base(f))
				text := af.Doc.Text()
				if !strings.HasPrefix(text, "Package "+name+" ") && !strings.HasPrefix(text, "Command ") {
					t.Errorf("%s: package comment in %s should start with %q", rel, filepath.Base(f), "Package "+name)
				}
			}
		}
		switch len(docs) {
		case 0:
			t.Errorf("%s: package %s has no package comment", rel, name)
		case 1:
		default:
			t.Errorf("%s: package %s has %d package comments (%v); keep one", rel, name, len(docs), docs)
		}
	}
}
