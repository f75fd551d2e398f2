module stepgraph.example/sg

go 1.19
