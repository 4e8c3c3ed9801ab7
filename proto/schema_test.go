package pb_test

import (
	"strings"
	"testing"

	// CRIU's schema, as go-criu generates it; registered under CRIU's
	// names (no package).
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/eventfd"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/eventpoll"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/ghost-file"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-desc"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-sem"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-shm"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/pipe-data"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/remap-file-path"
	_ "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-packet"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/crhook/crhook/proto"
)

const ourPackage = "crhook.images"

func criuName(d protoreflect.Descriptor) protoreflect.FullName {
	return protoreflect.FullName(strings.TrimPrefix(string(d.FullName()), ourPackage+"."))
}

// TestSchemaMatchesCRIU checks every message and enum that carries a CRIU
// name against CRIU's: each of our fields exists there with the same
// number, name, type, label and default, and each of CRIU's required
// fields exists here. That is what makes the wire format and CRIU's
// required-field checks agree; optional CRIU fields may be missing.
func TestSchemaMatchesCRIU(t *testing.T) {
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage(ourPackage, func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(fd.Path(), "proto/crhook") { // crhook's own messages
			return true
		}
		var enums []protoreflect.EnumDescriptor
		var msgs []protoreflect.MessageDescriptor
		for i := 0; i < fd.Enums().Len(); i++ {
			enums = append(enums, fd.Enums().Get(i))
		}
		for i := 0; i < fd.Messages().Len(); i++ {
			msgs = append(msgs, fd.Messages().Get(i))
		}
		for len(msgs) > 0 {
			md := msgs[0]
			msgs = msgs[1:]
			for i := 0; i < md.Enums().Len(); i++ {
				enums = append(enums, md.Enums().Get(i))
			}
			for i := 0; i < md.Messages().Len(); i++ {
				msgs = append(msgs, md.Messages().Get(i))
			}
			compareMessage(t, md)
			n++
		}
		for _, ed := range enums {
			compareEnum(t, ed)
		}
		return true
	})
	t.Logf("checked %d messages", n)
	if n < 50 {
		t.Errorf("checked only %d messages; are the files registered?", n)
	}
}

func compareMessage(t *testing.T, ours protoreflect.MessageDescriptor) {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(criuName(ours))
	if err != nil {
		t.Errorf("%s: no CRIU message of that name: %v", ours.FullName(), err)
		return
	}
	criu, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		t.Errorf("%s: CRIU's is a %T", ours.FullName(), d)
		return
	}
	for i := 0; i < ours.Fields().Len(); i++ {
		f := ours.Fields().Get(i)
		cf := criu.Fields().ByNumber(f.Number())
		if cf == nil {
			t.Errorf("%s: field %d (%s) not in CRIU's", ours.Name(), f.Number(), f.Name())
			continue
		}
		if f.Name() != cf.Name() || f.Kind() != cf.Kind() || f.Cardinality() != cf.Cardinality() ||
			f.HasDefault() != cf.HasDefault() || (f.HasDefault() && f.Default().Interface() != cf.Default().Interface()) {
			t.Errorf("%s: field %d is %v %v %s default %v, CRIU's is %v %v %s default %v", ours.Name(), f.Number(),
				f.Cardinality(), f.Kind(), f.Name(), f.Default(), cf.Cardinality(), cf.Kind(), cf.Name(), cf.Default())
		}
		switch {
		case f.Message() != nil && cf.Message() != nil:
			if criuName(f.Message()) != cf.Message().FullName() {
				t.Errorf("%s.%s: type %s, CRIU's %s", ours.Name(), f.Name(), f.Message().FullName(), cf.Message().FullName())
			}
		case f.Enum() != nil && cf.Enum() != nil:
			if criuName(f.Enum()) != cf.Enum().FullName() {
				t.Errorf("%s.%s: type %s, CRIU's %s", ours.Name(), f.Name(), f.Enum().FullName(), cf.Enum().FullName())
			}
		}
	}
	for i := 0; i < criu.Fields().Len(); i++ {
		cf := criu.Fields().Get(i)
		if cf.Cardinality() == protoreflect.Required && ours.Fields().ByNumber(cf.Number()) == nil {
			t.Errorf("%s: CRIU's required field %d (%s) missing", ours.Name(), cf.Number(), cf.Name())
		}
	}
}

func compareEnum(t *testing.T, ours protoreflect.EnumDescriptor) {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(criuName(ours))
	if err != nil {
		t.Errorf("%s: no CRIU enum of that name: %v", ours.FullName(), err)
		return
	}
	criu, ok := d.(protoreflect.EnumDescriptor)
	if !ok {
		t.Errorf("%s: CRIU's is a %T", ours.FullName(), d)
		return
	}
	for i := 0; i < ours.Values().Len(); i++ {
		v := ours.Values().Get(i)
		cv := criu.Values().ByName(v.Name())
		if cv == nil || cv.Number() != v.Number() {
			t.Errorf("%s: value %s = %d not in CRIU's", ours.Name(), v.Name(), v.Number())
		}
	}
}
