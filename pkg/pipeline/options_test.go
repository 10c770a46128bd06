package pipeline

import (
	"reflect"
	"testing"
)

func TestSpecOptionInfo(t *testing.T) {
	spec, _ := Lookup("test_tag")
	got := spec.OptionInfo()
	want := []OptionInfo{
		{Key: "text", Type: "string", Default: "+"},
		{Key: "count", Type: "int", Default: 1},
		{Key: "wait", Type: "time.Duration", Default: "0s"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("OptionInfo() = %#v, want %#v", got, want)
	}
	if s := got[0].String(); s != `text string = "+"` {
		t.Errorf("String() = %s", s)
	}
	if s := got[2].String(); s != `wait time.Duration = 0s` {
		t.Errorf("String() = %s", s)
	}
	if none, _ := Lookup("test_drop"); none.OptionInfo() != nil {
		t.Error("a plugin without options has option info")
	}
}
