package caddymodule

import (
	"reflect"
	"testing"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// keyOf is the route key Provision gives h.
func keyOf(t *testing.T, h *Handler) string {
	t.Helper()
	key, err := routeKey(h.routeIdentity(h.function(), h.source()))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestRouteKeyPullAlways checks that a route with pull_policy always gets a
// new key at every load, so that a reload pulls again instead of keeping
// the route (and the digest it pinned) of the previous config.
func TestRouteKeyPullAlways(t *testing.T) {
	h := &Handler{Image: "localhost/fn:1", Name: "fn", Pool: ptr(2), PullPolicy: "always", app: &App{}}
	if a, b := keyOf(t, h), keyOf(t, h); a == b {
		t.Errorf("pull_policy always: two loads share route key %s", a)
	}
	h.PullPolicy = "missing"
	if a, b := keyOf(t, h), keyOf(t, h); a != b {
		t.Errorf("pull_policy missing: keys %s and %s differ for the same config", a, b)
	}
}

func TestRouteKey(t *testing.T) {
	base := func() *Handler {
		return &Handler{Image: "localhost/fn:1", Name: "fn", Pool: ptr(2), Network: networkNone, app: &App{}}
	}
	key := keyOf(t, base())
	for _, tc := range []struct {
		name        string
		modify      func(h *Handler)
		wantChanged bool
	}{
		{name: "cpus", modify: func(h *Handler) { h.CPUs = 2 }, wantChanged: true},
		{name: "nofile", modify: func(h *Handler) { h.Nofile = 4096 }, wantChanged: true},
		{name: "network", modify: func(h *Handler) { h.Network = networkHost }, wantChanged: true},
		{name: "read_only", modify: func(h *Handler) { h.ReadOnly = true }, wantChanged: true},
		{name: "user", modify: func(h *Handler) { h.user = &spawner.User{UID: 1, GID: 1} }, wantChanged: true},
		{name: "memory", modify: func(h *Handler) { h.Memory = 64 << 20 }, wantChanged: true},
		// Enforced by the handler: the containers stay the same.
		{name: "max_request_body", modify: func(h *Handler) { h.MaxRequestBody = ptr(int64(1)) }},
		{name: "max_response_bytes", modify: func(h *Handler) { h.MaxResponseBytes = 1 }},
		{name: "pass_authorization", modify: func(h *Handler) { h.PassAuthorization = true }},
		{name: "pull_policy never", modify: func(h *Handler) { h.PullPolicy = "never" }, wantChanged: true},
		// Credentials don't change the containers.
		{name: "registry_auth", modify: func(h *Handler) { h.RegistryAuth = &RegistryAuth{Username: "u", Password: "p"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base()
			tc.modify(h)
			if changed := keyOf(t, h) != key; changed != tc.wantChanged {
				t.Errorf("route key changed: %t, want %t", changed, tc.wantChanged)
			}
		})
	}
}

// TestRouteKeyCoversFunction changes each field of spawner.Function in turn
// and checks that the route key changes with it — or, for a field listed in
// routeKeyExcluded, that it does not. A field added to Function later
// fails here until it changes the key or is listed, with a reason.
func TestRouteKeyCoversFunction(t *testing.T) {
	base := routeIdentity{Function: spawner.Function{Name: "fn"}}
	key, err := routeKey(base)
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[spawner.Function]()
	for i := range typ.NumField() {
		field := typ.Field(i)
		t.Run(field.Name, func(t *testing.T) {
			if !field.IsExported() {
				t.Fatalf("Function.%s is unexported: routeKey can't encode it; export it or list it in routeKeyExcluded", field.Name)
			}
			id := base
			v := reflect.ValueOf(&id.Function).Elem().Field(i)
			setNonZero(v)
			if v.IsZero() {
				t.Fatalf("could not give Function.%s (%s) a non-zero value: teach setNonZero its kind", field.Name, field.Type)
			}
			got, err := routeKey(id)
			if err != nil {
				t.Fatal(err)
			}
			reason, excluded := routeKeyExcluded[field.Name]
			switch changed := got != key; {
			case excluded && changed:
				t.Errorf("Function.%s is listed as excluded from the route key (%s) but changes it", field.Name, reason)
			case !excluded && !changed:
				t.Errorf("changing Function.%s keeps the route key: a changed route would keep its stale pool; "+
					"encode it in routeKey or list it in routeKeyExcluded with a reason", field.Name)
			}
		})
	}
	for name := range routeKeyExcluded {
		if _, ok := typ.FieldByName(name); !ok {
			t.Errorf("routeKeyExcluded lists %q, which spawner.Function no longer has", name)
		}
	}
}

// setNonZero changes v to a value other than its current one and its zero
// value, recursing into pointers, slices, maps and structs. Kinds it can't
// set (interfaces, funcs, channels) are left alone.
func setNonZero(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 1.5)
	case reflect.Slice:
		elem := reflect.New(v.Type().Elem()).Elem()
		setNonZero(elem)
		v.Set(reflect.Append(v, elem))
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		setNonZero(p.Elem())
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				setNonZero(v.Field(i))
			}
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		setNonZero(k)
		setNonZero(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	}
}
