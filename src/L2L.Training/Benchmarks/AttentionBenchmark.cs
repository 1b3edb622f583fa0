// Attention forward and backward time of the engine's kernels on a model's shapes (causal, no padding).
using System.Diagnostics;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Training.Benchmarks;

/// <summary>One shape's measurements.</summary>
/// <param name="B">Sequences.</param>
/// <param name="T">Positions.</param>
/// <param name="C">Channels.</param>
/// <param name="NH">Heads.</param>
/// <param name="Path">The kernel family that ran (rows or tiled).</param>
/// <param name="ForwardMs">Best time of one forward, in milliseconds.</param>
/// <param name="BackwardMs">Best time of one backward (delta, query and key/value kernels), in milliseconds.</param>
/// <param name="Tflops">Causal attention FLOPs (forward 2·B·NH·T²·hs, backward 2.5× that: see the report) over forward + backward time, in TFLOP/s.</param>
/// <param name="WorkspaceBytes">Device bytes the saved state (output, log-sum-exp) and backward scratch take.</param>
public sealed record AttentionBenchResult(int B, int T, int C, int NH, string Path, double ForwardMs, double BackwardMs, double Tflops, long WorkspaceBytes);

/// <summary>A whole run, with the machine and device it ran on.</summary>
/// <param name="Machine">The host.</param>
/// <param name="Device">The accelerator.</param>
/// <param name="FlopFormula">How <see cref="AttentionBenchResult.Tflops"/> counts FLOPs.</param>
/// <param name="Results">One per shape.</param>
public sealed record AttentionBenchReport(MachineInfo Machine, string Device, string FlopFormula, IReadOnlyList<AttentionBenchResult> Results)
{
    /// <summary>Indented JSON.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);
}

/// <summary>Times <see cref="AttentionOps"/> forward and backward (causal) on given shapes.</summary>
public static class AttentionBenchmark
{
    /// <summary>
    /// The FLOP count used: a causal forward does QKᵀ and PV over half the T² pairs, 2·(2·B·NH·T²·hs)/2 = 2·B·NH·T²·hs;
    /// the backward recomputes QKᵀ and does dP, dV, dQ, dK: 5/2 of the forward.
    /// </summary>
    public const string FlopFormula = "forward 2*B*NH*T^2*hs (causal half of QK^T and PV), backward 2.5x forward (recomputed QK^T, dP, dV, dQ, dK)";

    /// <summary>Measures every shape: <paramref name="repeats"/> timed passes after one warm-up, best time kept.</summary>
    public static AttentionBenchReport Run(Backend backend, IEnumerable<(int B, int T, int C, int NH)> shapes, int repeats, Action<string>? log = null)
    {
        var ops = backend.Get<AttentionOps>();
        var s = backend.ComputeStream;
        var results = new List<AttentionBenchResult>();
        foreach (var (b, t, c, nh) in shapes)
        {
            long n = (long)b * t;
            using var qkv = backend.Allocate<float>(n * 3 * c, MemoryCategory.Other, "bench.qkv");
            using var output = backend.Allocate<float>(n * c, MemoryCategory.Other, "bench.output");
            using var lse = backend.Allocate<float>(AttentionOps.LseLength(b, t, nh), MemoryCategory.Other, "bench.lse");
            using var dOutput = backend.Allocate<float>(n * c, MemoryCategory.Other, "bench.doutput");
            using var dQkv = backend.Allocate<float>(n * 3 * c, MemoryCategory.Other, "bench.dqkv");
            using var scratch = backend.Allocate<float>(AttentionOps.BackwardScratchLength(b, t, c, nh), MemoryCategory.Other, "bench.scratch");
            // Zeros: the kernels do the same work whatever the values (no data-dependent skipping).
            qkv.View.MemSetToZero(s);
            dOutput.View.MemSetToZero(s);
            var none = ILGPU.ArrayView<int>.Empty;
            var forward = Best(s, repeats, () => ops.Forward(s, output.View, lse.View, qkv.View, none, none, b, t, c, nh, causal: true));
            var backward = Best(s, repeats, () => ops.Backward(s, dQkv.View, dOutput.View, qkv.View, output.View, lse.View, scratch.View, none, none, b, t, c, nh, causal: true));
            var forwardFlops = 2.0 * b * nh * (double)t * t * (c / nh);
            var tflops = 3.5 * forwardFlops / (forward + backward) / 1e12;
            var path = ops.Resolve(AttentionPath.Auto, c / nh).ToString().ToLowerInvariant();
            var result = new AttentionBenchResult(b, t, c, nh, path, forward * 1e3, backward * 1e3, tflops, output.Bytes + lse.Bytes + scratch.Bytes);
            results.Add(result);
            log?.Invoke($"B={b} T={t} C={c} NH={nh} ({path}): forward {result.ForwardMs:F3} ms, backward {result.BackwardMs:F3} ms, {tflops * 1e3:F1} GFLOP/s");
        }
        return new AttentionBenchReport(MachineInfo.Current(), backend.Description, FlopFormula, results);
    }

    private static double Best(AcceleratorStream stream, int repeats, Action pass)
    {
        pass();
        stream.Synchronize();
        var best = double.MaxValue;
        for (var r = 0; r < Math.Max(1, repeats); r++)
        {
            var clock = Stopwatch.StartNew();
            pass();
            stream.Synchronize();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
