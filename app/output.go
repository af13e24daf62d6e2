package app

import (
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// The -o/--output formats: table (default), wide (more columns where a
// list has more to show), json, yaml, and name (the ids only, one a line,
// for scripts: TASK=$(lpmos task list --mac M -o name)).
var outputFormats = []string{"table", "wide", "json", "yaml", "name"}

func checkOutput(o string) error {
	for _, f := range outputFormats {
		if o == f {
			return nil
		}
	}
	return fmt.Errorf("--output %q: use %s", o, strings.Join(outputFormats, ", "))
}

// structured reports whether output asks for the data itself (json, yaml).
func structured(output string) bool { return output == "json" || output == "yaml" }

// printData writes v as JSON (indented) or YAML (the JSON field names,
// through sigs.k8s.io/yaml).
func printData(w io.Writer, output string, v any) error {
	if output != "yaml" {
		return printJSON(w, v)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// printNames writes one name per line (-o name).
func printNames(w io.Writer, names []string) error {
	for _, n := range names {
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	return nil
}
