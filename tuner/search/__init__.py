"""From measurements to an answer: search strategies (`strategy` registry; `grid`; `smart` with
`bracket` for load levels and `ceiling` for the compute bound), the recommendation under the
constraints (`recommend`) and capacity planning (`plan`). Pure: no server, no I/O."""
