// Matrix-product throughput of the engine's kernels, and of cuBLAS in the same process when the device is CUDA.
using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Training.Benchmarks;

/// <summary>One product shape's measurements.</summary>
/// <param name="Name">What the shape is (e.g. <c>square</c>, <c>gpt2 mlp.c_fc</c>).</param>
/// <param name="Layout">NN, NT or TN.</param>
/// <param name="M">Rows of C.</param>
/// <param name="N">Columns of C.</param>
/// <param name="K">Inner dimension.</param>
/// <param name="Seconds">Best time of one product with the engine's kernel.</param>
/// <param name="Tflops">2·M·N·K / Seconds, in TFLOP/s.</param>
/// <param name="CublasTflops">The same for cuBLAS SGEMM, when measured.</param>
/// <param name="Ratio">Tflops / CublasTflops, when measured.</param>
public sealed record GemmBenchResult(string Name, string Layout, int M, int N, int K, double Seconds, double Tflops, double? CublasTflops, double? Ratio);

/// <summary>A whole run, with the machine and device it ran on.</summary>
public sealed record GemmBenchReport(MachineInfo Machine, string Device, string? CublasStatus, IReadOnlyList<GemmBenchResult> Results)
{

    /// <summary>Indented JSON.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);
}

/// <summary>Times the FP32 <c>GemmOps.Gemm</c> on squares and on a GPT-2 layer's product shapes.</summary>
public static class GemmBenchmark
{
    /// <summary>The three products of every linear layer of a model with C channels over N tokens: forward (NN), input gradient (NT), weight gradient (TN).</summary>
    public static IEnumerable<(string Name, GemmLayout Layout, int M, int N, int K)> LayerShapes(int tokens, int channels)
    {
        foreach (var (name, fanIn, fanOut) in new[] { ("attn.c_attn", channels, 3 * channels), ("attn.c_proj", channels, channels), ("mlp.c_fc", channels, 4 * channels), ("mlp.c_proj", 4 * channels, channels) })
        {
            yield return ($"{name} forward", GemmLayout.NN, tokens, fanOut, fanIn);
            yield return ($"{name} dInput", GemmLayout.NT, tokens, fanIn, fanOut);
            yield return ($"{name} dWeight", GemmLayout.TN, fanIn, fanOut, tokens);
        }
    }

    /// <summary>Measures every shape: <paramref name="repeats"/> timed products after one warm-up, best time kept.</summary>
    public static GemmBenchReport Run(Backend backend, IEnumerable<(string Name, GemmLayout Layout, int M, int N, int K)> shapes, int repeats, Action<string>? log = null)
    {
        var gemm = backend.Get<GemmOps>();
        var stream = backend.ComputeStream;
        var results = new List<GemmBenchResult>();
        string? cublasStatus = null;
        CuBlas? cublas = null;
        if (backend.Accelerator is CudaAccelerator cuda)
        {
            try { cublas = new CuBlas(cuda); cublasStatus = "measured"; }
            catch (Exception e) when (e is DllNotFoundException or CuBlasException or EntryPointNotFoundException) { cublasStatus = $"unavailable: {e.Message}"; }
        }
        else
        {
            cublasStatus = "not a CUDA device";
        }
        try
        {
            foreach (var (name, layout, m, n, k) in shapes)
            {
                using var a = backend.Allocate<float>((long)m * k, MemoryCategory.Other, "bench.a");
                using var b = backend.Allocate<float>((long)k * n, MemoryCategory.Other, "bench.b");
                using var c = backend.Allocate<float>((long)m * n, MemoryCategory.Other, "bench.c");
                a.View.MemSetToZero(stream);
                b.View.MemSetToZero(stream);
                var ours = Best(stream, repeats, () => gemm.Gemm(stream, c.View, a.View, b.View, m, n, k, layout));
                double? theirs = null;
                if (cublas is not null)
                {
                    // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ.
                    var (opA, lda) = layout == GemmLayout.TN ? (CuBlasOperation.Transpose, m) : (CuBlasOperation.NonTranspose, k);
                    var (opB, ldb) = layout == GemmLayout.NT ? (CuBlasOperation.Transpose, k) : (CuBlasOperation.NonTranspose, n);
                    theirs = Best(stream, repeats, () => cublas.Gemm(opB, opA, n, m, k, 1f, b.View, ldb, a.View, lda, 0f, c.View, n));
                }
                var flops = 2.0 * m * n * k;
                var result = new GemmBenchResult(name, layout.ToString(), m, n, k, ours, flops / ours / 1e12,
                    theirs is { } t ? flops / t / 1e12 : null, theirs is { } t2 ? t2 / ours : null);
                results.Add(result);
                log?.Invoke($"{name,-22} {layout} {m,6}x{n,6}x{k,6}  {result.Tflops * 1e3,9:F2} GFLOP/s" +
                    (result.CublasTflops is { } ct ? $"  cuBLAS {ct * 1e3,9:F2} GFLOP/s  ratio {result.Ratio:F2}" : ""));
            }
        }
        finally
        {
            cublas?.Dispose();
        }
        return new GemmBenchReport(MachineInfo.Current(), backend.Description, cublasStatus, results);
    }

    private static double Best(AcceleratorStream stream, int repeats, Action product)
    {
        product();
        WaitForDevice(stream);
        var best = double.MaxValue;
        for (var r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            product();
            WaitForDevice(stream);
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    /// <summary>cuBLAS runs on its own stream, so waiting means the whole device, not only ours.</summary>
    private static void WaitForDevice(AcceleratorStream stream)
    {
        stream.Synchronize();
        stream.Accelerator.Synchronize();
    }
}
