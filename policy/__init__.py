"""The CrossGuard policy pack that reviews every customer stack against its canonical rendering."""
