// BenchmarkDotNet entry point: `dotnet run -c Release --project bench/L2L.Bench -- --filter '*'` (or `--list flat`).
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(L2L.Bench.AdamWBenchmarks).Assembly).Run(args);
