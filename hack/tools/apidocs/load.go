package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// apiPackage is one documented package.
type apiPackage struct {
	Name string
	// Doc is the package comment without markers.
	Doc string
	// Group is the +groupName marker; empty for a plain JSON schema.
	Group string
	Types []*apiType
	// Consts are the untyped constant groups; typed ones are on their type.
	Consts []*constGroup
	Funcs  []*funcDoc

	docPkg *doc.Package
}

// isAPI reports whether the package is a Kubernetes API group-version.
func (p *apiPackage) isAPI() bool { return p.Group != "" }

// apiVersion is the apiVersion its objects carry.
func (p *apiPackage) apiVersion() string { return p.Group + "/" + p.Name }

// apiType is one exported type.
type apiType struct {
	Name    string
	Doc     string
	Markers markers
	// Struct is set for struct types; otherwise Underlying names the type.
	Struct     bool
	Underlying string
	Fields     []*apiField
	Consts     []*constEntry

	// refs are the package's own types the fields use, in field order.
	refs []string
	pos  token.Pos
}

// root reports whether the type is a top-level Kubernetes object.
func (t *apiType) root() bool { return t.Markers.get("kubebuilder:object:root") == "true" }

// apiField is one field of a struct, or an embedded TypeMeta expanded.
type apiField struct {
	JSONName  string
	Type      string
	OmitEmpty bool
	// Inline is an embedded struct whose fields appear in the parent.
	Inline bool
	// TypeMeta is "apiVersion" or "kind" for the rows of an embedded
	// TypeMeta, whose values depend on the type.
	TypeMeta string
	Doc      string
	Markers  markers
}

// constEntry is one constant.
type constEntry struct {
	Name, Value, Doc string
}

// constGroup is a const declaration of the package with its comment.
type constGroup struct {
	Doc     string
	Entries []*constEntry
}

// funcDoc is one exported function.
type funcDoc struct {
	Name, Signature, Doc string
}

// marker is one +name or +name=value comment line.
type marker struct{ Name, Value string }

type markers []marker

// lookup returns the value of the first marker called name, and whether
// there is one: a marker may be present with an empty value.
func (ms markers) lookup(name string) (string, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m.Value, true
		}
	}
	return "", false
}

func (ms markers) get(name string) string {
	v, _ := ms.lookup(name)
	return v
}

func (ms markers) has(name string) bool {
	return slices.ContainsFunc(ms, func(m marker) bool { return m.Name == name })
}

// argMarkers take comma-separated key=value arguments after their name.
var argMarkers = []string{
	"kubebuilder:validation:XValidation",
	"kubebuilder:resource",
	"kubebuilder:printcolumn",
}

// splitDoc separates a comment's prose from its marker lines.
func splitDoc(text string) (string, markers) {
	var prose []string
	var ms markers
	for line := range strings.SplitSeq(text, "\n") {
		t := strings.TrimSpace(line)
		if !strings.HasPrefix(t, "+") || len(t) < 2 || t[1] == ' ' {
			prose = append(prose, line)
			continue
		}
		ms = append(ms, parseMarker(t[1:]))
	}
	return strings.TrimSpace(strings.Join(prose, "\n")), ms
}

func parseMarker(s string) marker {
	for _, name := range argMarkers {
		if rest, ok := strings.CutPrefix(s, name+":"); ok {
			return marker{Name: name, Value: rest}
		}
	}
	name, value, _ := strings.Cut(s, "=")
	return marker{Name: name, Value: value}
}

// markerArgs parses key=value,key=value where a value is a Go-quoted
// string, a back-quoted string, a {…} list or bare text up to the next comma.
func markerArgs(s string) [][2]string {
	var out [][2]string
	for s != "" {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			out = append(out, [2]string{s, ""})
			break
		}
		var value string
		switch {
		case strings.HasPrefix(rest, `"`):
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				value, rest = rest, ""
				break
			}
			value, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		case strings.HasPrefix(rest, "`"):
			end := strings.Index(rest[1:], "`")
			if end < 0 {
				value, rest = rest[1:], ""
				break
			}
			value, rest = rest[1:end+1], rest[end+2:]
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				value, rest = rest, ""
				break
			}
			value, rest = rest[:end+1], rest[end+1:]
		default:
			value, rest, _ = strings.Cut(rest, ",")
			rest = "," + rest
			if rest == "," {
				rest = ""
			}
		}
		out = append(out, [2]string{key, value})
		s = strings.TrimPrefix(rest, ",")
	}
	return out
}

// markerArgMap is markerArgs by key, for markers whose arguments are read by
// name; a repeated key keeps its last value.
func markerArgMap(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range markerArgs(s) {
		m[kv[0]] = kv[1]
	}
	return m
}

// loadPackage parses the non-test Go files of dir, in file name order.
func loadPackage(dir string) (*apiPackage, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") || strings.HasPrefix(n, "zz_generated") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no Go files", dir)
	}
	// Imports by file, to link types of other packages.
	imports := map[*ast.File]map[string]string{}
	for _, f := range files {
		m := map[string]string{}
		for _, is := range f.Imports {
			path, _ := strconv.Unquote(is.Path.Value)
			name := filepath.Base(path)
			if is.Name != nil {
				name = is.Name.Name
			}
			m[name] = path
		}
		imports[f] = m
	}
	fileOf := func(pos token.Pos) *ast.File {
		for _, f := range files {
			if f.FileStart <= pos && pos <= f.FileEnd {
				return f
			}
		}
		return nil
	}

	dp, err := doc.NewFromFiles(fset, files, dir)
	if err != nil {
		return nil, err
	}
	p := &apiPackage{Name: dp.Name, docPkg: dp}
	var pkgMarkers markers
	p.Doc, pkgMarkers = splitDoc(dp.Doc)
	p.Group = pkgMarkers.get("groupName")

	local := map[string]bool{}
	for _, t := range dp.Types {
		local[t.Name] = true
	}
	for _, t := range dp.Types {
		ts := typeSpec(t)
		if ts == nil {
			continue
		}
		at := &apiType{Name: t.Name, pos: ts.Pos()}
		at.Doc, at.Markers = splitDoc(t.Doc)
		file := fileOf(ts.Pos())
		tr := &typeRenderer{local: local, imports: imports[file], pkg: p.Name}
		if st, ok := ts.Type.(*ast.StructType); ok {
			at.Struct = true
			for _, f := range st.Fields.List {
				at.Fields = append(at.Fields, fieldsOf(f, tr)...)
			}
			at.refs = tr.refs
		} else {
			at.Underlying = tr.render(ts.Type)
		}
		for _, v := range t.Consts {
			at.Consts = append(at.Consts, constEntries(fset, v)...)
		}
		p.Types = append(p.Types, at)
	}
	for _, v := range dp.Consts {
		g := &constGroup{Doc: strings.TrimSpace(v.Doc), Entries: constEntries(fset, v)}
		if len(g.Entries) > 0 {
			p.Consts = append(p.Consts, g)
		}
	}
	// go/doc files constructors under the type they return; the reference
	// lists every function in one place.
	funcs := slices.Clone(dp.Funcs)
	for _, t := range dp.Types {
		funcs = append(funcs, t.Funcs...)
	}
	slices.SortFunc(funcs, func(a, b *doc.Func) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range funcs {
		var sig bytes.Buffer
		decl := *f.Decl
		decl.Body, decl.Doc = nil, nil
		if err := printer.Fprint(&sig, fset, &decl); err != nil {
			return nil, err
		}
		p.Funcs = append(p.Funcs, &funcDoc{Name: f.Name, Signature: sig.String(), Doc: strings.TrimSpace(f.Doc)})
	}
	p.Types = orderTypes(p.Types)
	return p, nil
}

func typeSpec(t *doc.Type) *ast.TypeSpec {
	for _, s := range t.Decl.Specs {
		if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.Name == t.Name {
			return ts
		}
	}
	return nil
}

// fieldsOf documents one field list entry: an embedded TypeMeta becomes
// apiVersion and kind, another inline embedding one row, and a field
// without a JSON name or with "-" nothing.
func fieldsOf(f *ast.Field, tr *typeRenderer) []*apiField {
	var tag reflect.StructTag
	if f.Tag != nil {
		s, _ := strconv.Unquote(f.Tag.Value)
		tag = reflect.StructTag(s)
	}
	jsonTag, hasTag := tag.Lookup("json")
	name, opts, _ := strings.Cut(jsonTag, ",")
	if name == "-" && opts == "" {
		return nil
	}
	docText := f.Doc.Text()
	if docText == "" {
		docText = f.Comment.Text()
	}
	text, ms := splitDoc(docText)
	af := &apiField{Doc: text, Markers: ms, OmitEmpty: slices.Contains(strings.Split(opts, ","), "omitempty")}
	if len(f.Names) == 0 {
		typ := tr.render(f.Type)
		if strings.HasSuffix(tr.plain(f.Type), ".TypeMeta") {
			return []*apiField{
				{JSONName: "apiVersion", Type: "`string`", TypeMeta: "apiVersion"},
				{JSONName: "kind", Type: "`string`", TypeMeta: "kind"},
			}
		}
		if !hasTag || name == "" {
			af.JSONName, af.Inline, af.Type = "", true, typ
			return []*apiField{af}
		}
		af.JSONName, af.Type = name, typ
		return []*apiField{af}
	}
	var out []*apiField
	for _, n := range f.Names {
		if !n.IsExported() {
			continue
		}
		c := *af
		c.JSONName = name
		if c.JSONName == "" {
			c.JSONName = n.Name
		}
		c.Type = tr.render(f.Type)
		out = append(out, &c)
	}
	return out
}

// constEntries lists the exported constants of a declaration with their
// values as written.
func constEntries(fset *token.FileSet, v *doc.Value) []*constEntry {
	var out []*constEntry
	for _, s := range v.Decl.Specs {
		vs, ok := s.(*ast.ValueSpec)
		if !ok {
			continue
		}
		text := vs.Doc.Text()
		if text == "" {
			text = vs.Comment.Text()
		}
		for i, n := range vs.Names {
			if !n.IsExported() {
				continue
			}
			e := &constEntry{Name: n.Name, Doc: strings.TrimSpace(text)}
			if i < len(vs.Values) {
				var b bytes.Buffer
				if err := printer.Fprint(&b, fset, vs.Values[i]); err == nil {
					e.Value = b.String()
				}
			}
			out = append(out, e)
		}
	}
	return out
}

// orderTypes lists the top-level objects (root markers) and the types no
// other type uses, each followed depth-first by the types it uses, in field
// order; then whatever is left, in source order.
func orderTypes(types []*apiType) []*apiType {
	bySource := slices.Clone(types)
	slices.SortStableFunc(bySource, func(a, b *apiType) int { return int(a.pos - b.pos) })
	byName := map[string]*apiType{}
	used := map[string]bool{}
	for _, t := range bySource {
		byName[t.Name] = t
		for _, r := range t.refs {
			if r != t.Name {
				used[r] = true
			}
		}
	}
	var out []*apiType
	seen := map[string]bool{}
	var visit func(t *apiType)
	visit = func(t *apiType) {
		if seen[t.Name] {
			return
		}
		seen[t.Name] = true
		out = append(out, t)
		for _, r := range t.refs {
			if rt, ok := byName[r]; ok {
				visit(rt)
			}
		}
	}
	for _, t := range bySource {
		if t.root() {
			visit(t)
		}
	}
	for _, t := range bySource {
		if !used[t.Name] {
			visit(t)
		}
	}
	for _, t := range bySource {
		visit(t)
	}
	return out
}
