package kubelet

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// defaultCapabilities is what container runtimes (containerd, CRI-O) grant
// a container that is not privileged, before its securityContext adds or
// drops any.
var defaultCapabilities = []string{
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// Command returns the command that runs containerName's process (command
// and args, with $(VAR) references expanded) as kubelet and a container
// runtime would, inside the network namespace ns (the host's when ns has no
// name):
//
//   - Environment: env and envFrom, including downward API fieldRef and
//     resourceFieldRef values and Secret/ConfigMap keys, plus HOSTNAME; the
//     host's PATH when the container sets none (there is no image).
//   - Volumes: there is no container root file system, so the process runs
//     on the host's, and every absolute path in command, args, env values
//     and workingDir that is a volumeMount's mountPath or below one — or an
//     ancestor of mountPaths, such as a --token-dir holding one mount per
//     token — is rewritten to the same path below a stand-in root
//     (<Root>/pods/<uid>/containers/<name>/rootfs), where each mountPath is
//     a symlink to the volume's host directory from vols (MountVolumes'
//     result). Paths are recognised at the start of a value or after '=',
//     ':', ',', a space or a quote, so shell scripts in args work too.
//     The stand-in root's directories are made searchable by all, but Root
//     and its parents must be searchable by the container's user when it
//     is not root. Read-only mounts are bind-mounted read-only onto
//     themselves in the process's private mount namespace, so the process
//     cannot write them while Run keeps updating them from outside.
//   - Security: runAsUser/runAsGroup (container, else Pod; unset keeps
//     root) and supplemental groups through setpriv; the runtime's default
//     capabilities minus drop plus add as the bounding and inheritable sets,
//     without ambient capabilities, so, as with containerd, they take
//     effect for root only; allowPrivilegeEscalation=false sets
//     no_new_privs; /proc/sys is read-only unless privileged. Seccomp,
//     AppArmor and readOnlyRootFilesystem are not applied.
//   - Command: the first element is mapped through Config.Executables.
//
// The process runs in a mount namespace of its own (ip netns exec makes
// one; unshare does without ns), so nothing it mounts leaks to the host.
func (k *Kubelet) Command(ctx context.Context, pod *corev1.Pod, containerName string, vols map[string]string, ns podnet.NS) (*exec.Cmd, error) {
	c, err := findContainer(pod, containerName)
	if err != nil {
		return nil, err
	}
	if len(c.Command) == 0 {
		return nil, fmt.Errorf("container %s has no command, and there is no image to take an entrypoint from", containerName)
	}
	env, err := k.environment(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(k.cfg.Root, "pods", string(pod.UID), "containers", containerName, "rootfs")
	rw := &rewriter{rootfs: rootfs, mounts: map[string]bool{}, ancestors: map[string]bool{}}
	var readOnly []string
	for _, m := range c.VolumeMounts {
		host, ok := vols[m.MountPath]
		if !ok {
			return nil, fmt.Errorf("volume mount %s at %s: not in vols; call MountVolumes first", m.Name, m.MountPath)
		}
		mp := filepath.Clean(m.MountPath)
		link := filepath.Join(rootfs, mp)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, fmt.Errorf("preparing %s: %w", link, err)
		}
		if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("preparing %s: %w", link, err)
		}
		if err := os.Symlink(host, link); err != nil {
			return nil, fmt.Errorf("linking %s: %w", link, err)
		}
		rw.mounts[mp] = true
		for d := filepath.Dir(mp); d != "/" && d != "."; d = filepath.Dir(d) {
			rw.ancestors[d] = true
		}
		if m.ReadOnly {
			readOnly = append(readOnly, host)
		}
	}
	// The stand-in root must be traversable by the container's user.
	for d := rootfs; strings.HasPrefix(d, k.cfg.Root) && d != k.cfg.Root; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, fmt.Errorf("preparing %s: %w", d, err)
		}
	}

	vars := map[string]string{}
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		vars[name] = val
	}
	var argv []string
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		argv = append(argv, rw.rewrite(expand(a, vars)))
	}
	if host, ok := k.cfg.Executables[c.Command[0]]; ok {
		argv[0] = host
	}
	for i, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		env[i] = name + "=" + rw.rewrite(val)
	}

	sc := effectiveSecurity(pod, c)
	var script []string
	for _, dir := range readOnly {
		script = append(script, "mount --bind "+shellQuote(dir)+" "+shellQuote(dir), "mount -o remount,bind,ro "+shellQuote(dir)+" "+shellQuote(dir))
	}
	if !sc.privileged {
		script = append(script, "mount --bind /proc/sys /proc/sys", "mount -o remount,bind,ro /proc/sys")
		script = append(script, "exec setpriv "+strings.Join(sc.setprivArgs(), " ")+` -- "$@"`)
	} else {
		script = append(script, `exec "$@"`)
	}
	shArgs := append([]string{"-c", strings.Join(script, " && "), "sh"}, argv...)
	var cmd *exec.Cmd
	if ns.Name != "" {
		cmd = ns.Command(ctx, "sh", shArgs...)
	} else {
		cmd = exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "sh"}, shArgs...)...)
	}
	cmd.Env = env
	cmd.Dir = "/"
	if c.WorkingDir != "" {
		cmd.Dir = rw.rewrite(expand(c.WorkingDir, vars))
	}
	return cmd, nil
}

// environment builds the container's environment as kubelet does: envFrom
// first, then env, later entries overriding earlier ones and $(VAR)
// references expanded against what came before.
func (k *Kubelet) environment(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(name, val string) {
		if _, ok := vars[name]; !ok {
			order = append(order, name)
		}
		vars[name] = val
	}
	set("HOSTNAME", pod.Name)
	for _, from := range c.EnvFrom {
		var ref objectRef
		var optional bool
		switch {
		case from.SecretRef != nil:
			ref, optional = objectRef{kindSecret, pod.Namespace, from.SecretRef.Name}, isTrue(from.SecretRef.Optional)
		case from.ConfigMapRef != nil:
			ref, optional = objectRef{kindConfigMap, pod.Namespace, from.ConfigMapRef.Name}, isTrue(from.ConfigMapRef.Optional)
		default:
			continue
		}
		data, found, err := k.get(ctx, ref)
		if err != nil {
			return nil, err
		}
		if !found {
			if optional {
				continue
			}
			return nil, fmt.Errorf("envFrom: %w", &missingError{ref: ref})
		}
		for _, key := range slices.Sorted(maps.Keys(data)) {
			set(from.Prefix+key, string(data[key]))
		}
	}
	for _, e := range c.Env {
		val, err := k.envValue(ctx, pod, c, e, vars)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, val)
	}
	if _, ok := vars["PATH"]; !ok {
		set("PATH", os.Getenv("PATH"))
	}
	out := make([]string, 0, len(order))
	for _, name := range order {
		out = append(out, name+"="+vars[name])
	}
	return out, nil
}

func (k *Kubelet) envValue(ctx context.Context, pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar, vars map[string]string) (string, error) {
	from := e.ValueFrom
	if from == nil {
		return expand(e.Value, vars), nil
	}
	switch {
	case from.FieldRef != nil:
		return fieldValue(pod, from.FieldRef.FieldPath)
	case from.ResourceFieldRef != nil:
		name := from.ResourceFieldRef.ContainerName
		if name == "" {
			name = c.Name
		}
		return resourceValue(pod, name, from.ResourceFieldRef)
	case from.SecretKeyRef != nil, from.ConfigMapKeyRef != nil:
		ref, key, optional := objectRef{kindSecret, pod.Namespace, ""}, "", false
		if s := from.SecretKeyRef; s != nil {
			ref.name, key, optional = s.Name, s.Key, isTrue(s.Optional)
		} else {
			s := from.ConfigMapKeyRef
			ref.kind, ref.name, key, optional = kindConfigMap, s.Name, s.Key, isTrue(s.Optional)
		}
		data, found, err := k.get(ctx, ref)
		if err != nil {
			return "", err
		}
		v, ok := data[key]
		if !found || !ok {
			if optional {
				return "", nil
			}
			return "", &missingError{ref: ref, key: key}
		}
		return string(v), nil
	}
	return "", fmt.Errorf("unsupported valueFrom")
}

// expand replaces $(NAME) with NAME's value where defined and $$ with $,
// leaving other references as written, as kubelet does.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

const (
	// pathStart are the characters after which a path is recognised (and
	// the start of a value): flags, lists and shell words.
	pathStart = "=:, '\""
	// pathEnd are the characters that end a path.
	pathEnd = ":, '\";"
)

// rewriter maps container paths to the stand-in root.
type rewriter struct {
	rootfs string
	// mounts are mountPaths: they and paths below them are rewritten.
	mounts map[string]bool
	// ancestors are directories holding mountPaths: rewritten only when
	// named exactly, since their other content is not the container's.
	ancestors map[string]bool
}

// rewrite rewrites every recognised path in s.
func (r *rewriter) rewrite(s string) string {
	candidates := slices.Collect(maps.Keys(r.mounts))
	for a := range r.ancestors {
		if !r.mounts[a] {
			candidates = append(candidates, a)
		}
	}
	// Longest first, so a nested mount wins over its parent.
	slices.SortFunc(candidates, func(a, b string) int { return len(b) - len(a) })
	var b strings.Builder
	for i := 0; i < len(s); {
		if i == 0 || strings.ContainsRune(pathStart, rune(s[i-1])) {
			if c, ok := r.match(s[i:], candidates); ok {
				b.WriteString(r.rootfs + c)
				i += len(c)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func (r *rewriter) match(s string, candidates []string) (string, bool) {
	for _, c := range candidates {
		rest, ok := strings.CutPrefix(s, c)
		if !ok {
			continue
		}
		end := rest == "" || strings.ContainsRune(pathEnd, rune(rest[0]))
		if end || (r.mounts[c] && rest[0] == '/') {
			return c, true
		}
	}
	return "", false
}

// security is what Command enforces of a securityContext.
type security struct {
	privileged bool
	uid, gid   *int64
	groups     []int64
	noNewPrivs bool
	caps       []string
}

// effectiveSecurity merges the Pod's and the container's securityContext.
func effectiveSecurity(pod *corev1.Pod, c *corev1.Container) security {
	var s security
	if psc := pod.Spec.SecurityContext; psc != nil {
		s.uid, s.gid = psc.RunAsUser, psc.RunAsGroup
		s.groups = append(s.groups, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			s.groups = append(s.groups, *psc.FSGroup)
		}
	}
	capSet := map[string]bool{}
	for _, name := range defaultCapabilities {
		capSet[name] = true
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			s.uid = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			s.gid = csc.RunAsGroup
		}
		s.privileged = isTrue(csc.Privileged)
		s.noNewPrivs = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
		if caps := csc.Capabilities; caps != nil {
			for _, d := range caps.Drop {
				name := capName(d)
				if name == "ALL" {
					clear(capSet)
				}
				delete(capSet, name)
			}
			for _, a := range caps.Add {
				capSet[capName(a)] = true
			}
		}
	}
	s.caps = slices.Sorted(maps.Keys(capSet))
	return s
}

func capName(c corev1.Capability) string {
	return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_")
}

// setprivArgs renders s for setpriv(1).
func (s security) setprivArgs() []string {
	var args []string
	if s.uid != nil {
		gid := int64(0) // what runtimes use when runAsGroup is unset and the image says nothing
		if s.gid != nil {
			gid = *s.gid
		}
		args = append(args, "--reuid="+strconv.FormatInt(*s.uid, 10), "--regid="+strconv.FormatInt(gid, 10))
	} else if s.gid != nil {
		args = append(args, "--regid="+strconv.FormatInt(*s.gid, 10))
	}
	if len(s.groups) > 0 {
		gs := make([]string, 0, len(s.groups))
		for _, g := range s.groups {
			gs = append(gs, strconv.FormatInt(g, 10))
		}
		args = append(args, "--groups="+strings.Join(gs, ","))
	} else {
		args = append(args, "--clear-groups")
	}
	caps := "-all"
	for _, c := range s.caps {
		if c == "ALL" {
			caps = "+all"
			break
		}
		caps += ",+" + strings.ToLower(c)
	}
	args = append(args, "--inh-caps="+caps, "--bounding-set="+caps)
	if s.noNewPrivs {
		args = append(args, "--no-new-privs")
	}
	return args
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
