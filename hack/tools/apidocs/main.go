// Command apidocs writes docs/api.md, the API reference, from the Go types of
// the given packages: their doc comments and kubebuilder markers (required or
// optional, defaults, validation, resource settings). It reads source only, with
// the standard library, so the reference always matches what controller-gen
// turns into the CRD and what the sidecar decodes.
//
// Usage:
//
//	go run ./hack/tools/apidocs -o docs/api.md ./api/v1alpha1 ./api/payload
//
// A package with a +groupName marker is documented as a Kubernetes API (the
// Required column follows +optional and omitempty, as controller-gen does);
// any other as a JSON document (the column says whether a field is always
// present). The output depends on the sources alone: types are listed
// depth-first from the top-level ones in field order, the rest in source
// order, and nothing depends on map order or the clock.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
)

func main() {
	out := flag.String("o", "", "output file (default: standard output)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: apidocs [-o file] package-dir...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	var pkgs []*apiPackage
	for _, dir := range flag.Args() {
		p, err := loadPackage(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "apidocs:", err)
			os.Exit(1)
		}
		pkgs = append(pkgs, p)
	}
	var buf bytes.Buffer
	render(&buf, pkgs, flag.Args())
	if *out == "" {
		_, _ = os.Stdout.Write(buf.Bytes())
		return
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "apidocs:", err)
		os.Exit(1)
	}
}
