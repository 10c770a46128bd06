package cli

import (
	"fmt"
	"io"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// printPipelines prints each pipeline's steps with their resolved options.
func printPipelines(w io.Writer, steps []pipeline.ResolvedStep) error {
	var kind pipeline.Kind
	i := 0
	for _, st := range steps {
		if st.Kind != kind {
			kind, i = st.Kind, 0
			fmt.Fprintf(w, "pipeline %s:\n", kind)
		}
		i++
		b, err := pipeline.EncodeOptions(st.Options)
		if err != nil {
			return err
		}
		opts := string(b)
		label := st.Use
		if st.Label != st.Use {
			label = fmt.Sprintf("%s (%s)", st.Label, st.Use)
		}
		fmt.Fprintf(w, "  %d. %s %s\n", i, label, opts)
	}
	return nil
}
