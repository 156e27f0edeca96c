package main

import (
	"go/ast"
	"strings"
)

// typeRenderer writes a field's Go type as Markdown, linking the package's
// own types to their sections and other packages' types to pkg.go.dev.
type typeRenderer struct {
	local   map[string]bool
	imports map[string]string
	pkg     string
	refs    []string
}

// anchor is the HTML id of a type's section.
func anchor(pkg, name string) string { return strings.ToLower(pkg + "-" + name) }

// plain is the Go spelling of e.
func (tr *typeRenderer) plain(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return "*" + tr.plain(e.X)
	case *ast.ArrayType:
		return "[]" + tr.plain(e.Elt)
	case *ast.MapType:
		return "map[" + tr.plain(e.Key) + "]" + tr.plain(e.Value)
	case *ast.SelectorExpr:
		return tr.plain(e.X) + "." + e.Sel.Name
	case *ast.InterfaceType:
		return "any"
	}
	return "?"
}

// render is the Markdown of e as it appears in JSON: pointers are dropped
// (optionality is its own column) and []byte is base64 text.
func (tr *typeRenderer) render(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		if tr.local[e.Name] {
			tr.refs = append(tr.refs, e.Name)
			return "[" + e.Name + "](#" + anchor(tr.pkg, e.Name) + ")"
		}
		return "`" + e.Name + "`"
	case *ast.StarExpr:
		return tr.render(e.X)
	case *ast.ArrayType:
		if id, ok := e.Elt.(*ast.Ident); ok && id.Name == "byte" {
			return "`string` (base64)"
		}
		return prefix("[]", tr.render(e.Elt))
	case *ast.MapType:
		return prefix("map["+tr.plain(e.Key)+"]", tr.render(e.Value))
	case *ast.SelectorExpr:
		name := tr.plain(e)
		if x, ok := e.X.(*ast.Ident); ok {
			if path, ok := tr.imports[x.Name]; ok {
				return "[" + name + "](https://pkg.go.dev/" + path + "#" + e.Sel.Name + ")"
			}
		}
		return "`" + name + "`"
	}
	return "`" + tr.plain(e) + "`"
}

// prefix puts a Go type prefix before a rendered type, inside its code span
// when it has one.
func prefix(p, rendered string) string {
	if strings.HasPrefix(rendered, "`") {
		return "`" + p + rendered[1:]
	}
	return "`" + p + "`" + rendered
}
