package image_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"golang.org/x/mod/modfile"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line  int
	cmd   string   // upper case: FROM, RUN, COPY, …
	flags []string // leading --name=value options
	args  string   // the rest
}

// stage is one FROM and the instructions up to the next.
type stage struct {
	base, name string
	ins        []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (in instruction) flag(name string) (string, bool) {
	for _, f := range in.flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// parseDockerfile reads the instructions the build honours: comments and
// blank lines are dropped, a trailing backslash continues the line.
func parseDockerfile(path string) ([]stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		stages  []stage
		pending strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		text := pending.String()
		pending.Reset()
		cmd, rest, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd)}
		rest = strings.TrimSpace(rest)
		for strings.HasPrefix(rest, "--") {
			var f string
			f, rest, _ = strings.Cut(rest, " ")
			in.flags = append(in.flags, f)
			rest = strings.TrimSpace(rest)
		}
		in.args = rest
		if in.cmd == "FROM" {
			fields := strings.Fields(rest)
			st := stage{base: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue // global build arguments
			}
			return nil, fmt.Errorf("%s:%d: %s before FROM", path, start, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("%s: ends in a continued line", path)
	}
	return stages, sc.Err()
}

// minimalBases hold nothing but what the static binary brings.
var minimalBases = map[string]bool{
	"scratch":                                   true,
	"gcr.io/distroless/static:nonroot":          true,
	"gcr.io/distroless/static-debian12":         true,
	"gcr.io/distroless/static-debian12:nonroot": true,
}

// buildScript is the build stage's one source of the build command.
const buildScript = "hack/docker-build-command.sh"

// imageBinary is where the image holds the operator's binary: its
// entrypoint, and the command the manifests run.
const imageBinary = "/" + controlplane.OperatorBinary

var _ = Describe("The Dockerfile", func() {
	var (
		stages       []stage
		final, build stage
	)

	BeforeEach(func() {
		var err error
		stages, err = parseDockerfile(filepath.Join(controlplane.RepoRoot(), "Dockerfile"))
		Expect(err).NotTo(HaveOccurred())
		Expect(len(stages)).To(BeNumerically(">=", 2), "a build stage and the final stage")
		final = stages[len(stages)-1]
		copies := final.all("COPY")
		Expect(copies).To(HaveLen(1), "the final stage copies one thing: the directory of binaries the build writes")
		from, ok := copies[0].flag("from")
		Expect(ok).To(BeTrue(), "the final stage copies from the build stage (COPY --from)")
		found := false
		for _, st := range stages[:len(stages)-1] {
			if st.name == from {
				build, found = st, true
			}
		}
		Expect(found).To(BeTrue(), "COPY --from=%s names an earlier stage", from)
	})

	It("builds the binaries with hack/docker-build-command.sh, for the target platform", func() {
		runs := build.all("RUN")
		var buildRun *instruction
		for i := range runs {
			if strings.Contains(runs[i].args, buildScript) {
				buildRun = &runs[i]
			}
		}
		Expect(buildRun).NotTo(BeNil(), "the build stage runs %s", buildScript)
		Expect(buildRun.args).To(ContainSubstring("GOOS=${TARGETOS}"), "line %d: multi-platform builds set GOOS from TARGETOS", buildRun.line)
		Expect(buildRun.args).To(ContainSubstring("GOARCH=${TARGETARCH}"), "line %d: multi-platform builds set GOARCH from TARGETARCH", buildRun.line)

		// The directory the script writes is the one the final stage copies
		// to /, so that the binaries are /kubevirt-imds and
		// /kubevirt-imds-sidecar (the script's own output is tested with the
		// binaries).
		_, out, _ := strings.Cut(buildRun.args, buildScript)
		outFields := strings.Fields(out)
		Expect(outFields).To(HaveLen(1), "line %d: the script takes the output directory", buildRun.line)
		src := strings.Fields(final.all("COPY")[0].args)
		Expect(src).To(Equal([]string{strings.TrimSuffix(outFields[0], "/") + "/", "/"}), "the final stage copies the built binaries to /")

		info, err := os.Stat(filepath.Join(controlplane.RepoRoot(), buildScript))
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Mode().Perm()&0o111).NotTo(BeZero(), "RUN executes %s, so it must be executable", buildScript)
	})

	It("builds with a Go at least as new as go.mod asks for", func() {
		data, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "go.mod"))
		Expect(err).NotTo(HaveOccurred())
		mod, err := modfile.ParseLax("go.mod", data, nil)
		Expect(err).NotTo(HaveOccurred())
		m := regexp.MustCompile(`^(?:docker\.io/)?(?:library/)?golang:(\d+)\.(\d+)`).FindStringSubmatch(build.base)
		Expect(m).NotTo(BeNil(), "the build stage is an official golang:<major>.<minor> image, not %q", build.base)
		want := strings.SplitN(mod.Go.Version, ".", 3)
		Expect(atoi(m[1])*1000+atoi(m[2])).To(BeNumerically(">=", atoi(want[0])*1000+atoi(want[1])),
			"build image %s is older than go.mod's go %s", build.base, mod.Go.Version)
	})

	It("ends in a minimal image holding only the binaries, run as a non-root user", func() {
		Expect(minimalBases).To(HaveKey(final.base), "the final stage is FROM scratch or a distroless static image")
		for _, in := range final.ins {
			Expect(in.cmd).To(BeElementOf("COPY", "USER", "ENTRYPOINT", "LABEL"),
				"Dockerfile line %d: the final stage only copies the binaries and describes how it runs", in.line)
		}
		users := final.all("USER")
		Expect(users).To(HaveLen(1))
		// Numeric, so that the kubelet can enforce runAsNonRoot without an
		// /etc/passwd in the image.
		uid, gid, _ := strings.Cut(users[0].args, ":")
		for _, id := range []string{uid, gid} {
			n, err := strconv.Atoi(id)
			Expect(err).NotTo(HaveOccurred(), "USER %s is numeric", users[0].args)
			Expect(n).To(BeNumerically(">", 0), "USER %s is not root", users[0].args)
		}
		entry := final.all("ENTRYPOINT")
		Expect(entry).To(HaveLen(1))
		var argv []string
		Expect(json.Unmarshal([]byte(entry[0].args), &argv)).To(Succeed(), "ENTRYPOINT is in exec form: no shell in the image")
		Expect(argv).To(Equal([]string{imageBinary}))
	})

	It("excludes tests and tools from the build context but keeps what the build needs", func() {
		ig, err := readDockerignore(controlplane.RepoRoot())
		Expect(err).NotTo(HaveOccurred())
		for _, p := range []string{"go.mod", "go.sum", "main.go", buildScript, "controllers/scheme.go", "webhooks/pod.go", "sidecar/options.go", "sidecar/cmd/kubevirt-imds-sidecar/main.go", "sidecar/cmd/kubevirt-imds-sidecar-netadmin/main.go"} {
			Expect(ig.excluded(p)).To(BeFalse(), "%s is in the build context", p)
		}
		for _, p := range []string{".git/config", "tmp/bin/controller-gen", "test/controlplane/controlplane.go", "controllers/suite_test.go", "controllers/testdata/x"} {
			Expect(ig.excluded(p)).To(BeTrue(), "%s is not in the build context", p)
		}
	})
})

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	Expect(err).NotTo(HaveOccurred())
	return n
}
