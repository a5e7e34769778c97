"""The course's five practice assignments, run with one button and reported with measured numbers.

No Streamlit here; import the module you need (nothing is re-exported):
- `plan`: what each assignment trains, the runs that answer it, queueing the missing ones;
- `measures`: what a run measured, in the numbers the report quotes;
- `comparisons`: the answers of assignments 3 and 4, worked out from the measurements;
- `report`: the filled-in template of every assignment;
- `export`: a section's Markdown and tables, the whole report as Markdown and CSV;
- `overlay`: the figure of assignment 4, one line per change.
"""
