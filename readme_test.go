package buffstreams_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeProgramsCompile keeps the README's Go code from rotting: every
// ```go block must be a complete, gofmt-formatted program, and all of them
// must build and pass go vet against the package in this directory. Each
// block becomes package main of its own directory in a throwaway module
// whose go.mod replaces the library with this checkout.
func TestReadmeProgramsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the README's programs with the go command")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipped: the go command is not on PATH, so the README's programs cannot be built")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlocks(readme)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block: the extraction is broken, or the programs were removed")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	goVersion, err := goDirective(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}

	mod := t.TempDir()
	gomod := fmt.Sprintf("module readme\n\ngo %s\n\nrequire github.com/buffstreams/buffstreams v1.0.0\n\nreplace github.com/buffstreams/buffstreams => %s\n",
		goVersion, root)
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o666); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if !strings.HasPrefix(b.src, "package main\n") {
			t.Errorf("README.md:%d: the Go block does not start with \"package main\": the README shows complete programs only", b.line)
		}
		if formatted, err := format.Source([]byte(b.src)); err == nil && !bytes.Equal(formatted, []byte(b.src)) {
			t.Errorf("README.md:%d: the Go block is not gofmt-formatted; gofmt gives:\n%s", b.line, formatted)
		}
		dir := filepath.Join(mod, fmt.Sprintf("block%d_line%d", i+1, b.line))
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(b.src), 0o666); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing is downloaded: the library is the checkout, and it imports
	// only the standard library.
	env := append(os.Environ(), "GOWORK=off", "GOPROXY=off", "GOFLAGS=-buildvcs=false")
	for _, args := range [][]string{
		{"build", "-o", t.TempDir() + string(filepath.Separator), "./..."},
		{"vet", "./..."},
	} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = mod
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s on the README's programs (each directory is named after its block's first line in README.md): %v\n%s",
				strings.Join(args, " "), err, out)
		}
	}
}

// goBlock is one fenced Go block of a Markdown file: its text and the line
// of its first line of code.
type goBlock struct {
	src  string
	line int
}

// goBlocks returns the ```go blocks of a Markdown document.
func goBlocks(md []byte) []goBlock {
	var blocks []goBlock
	var cur *strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(md))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur, start = new(strings.Builder), n+1
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, goBlock{src: cur.String(), line: start})
			cur = nil
		case cur != nil:
			cur.WriteString(line)
			cur.WriteByte('\n')
		}
	}
	return blocks
}

// goDirective returns the version of the go directive of a go.mod file.
func goDirective(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s has no go directive", path)
}
