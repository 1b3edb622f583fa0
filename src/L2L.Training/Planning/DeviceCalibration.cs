// Measured speeds of this device (GEMM, attention, element-wise kernels, launches, bus, host optimizer), cached per device.
using System.Diagnostics;
using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model;
using L2L.Training.Benchmarks;
using L2L.Training.Optim;

namespace L2L.Training.Planning;

/// <summary>One measured GEMM speed: products of about <paramref name="Size"/>³ multiply-adds ran at <paramref name="FlopsPerS"/>.</summary>
public sealed record GemmPoint(double Size, double FlopsPerS);

/// <summary>One measured product of a model's layers: an M×N×K GEMM in <paramref name="Layout"/> ran at <paramref name="FlopsPerS"/>.</summary>
public sealed record GemmShape(int M, int N, int K, string Layout, double FlopsPerS);

/// <summary>
/// The speeds the step-time model uses. <see cref="Calibrate"/> measures them on a device; <see cref="Defaults"/> are
/// documented guesses per device kind for a device never calibrated. Cached as JSON under
/// <c>$XDG_CACHE_HOME/l2l/calibration/</c> (else <c>~/.cache/l2l/calibration/</c>), one file per device name.
/// </summary>
/// <param name="Device">The device's description.</param>
/// <param name="Measured">Whether these were measured (false: the defaults).</param>
/// <param name="Gemm">GEMM speed by size (cube root of M·N·K), ascending; interpolated in log size, clamped at the ends.</param>
/// <param name="AttentionFlopsPerS">Attention forward + backward FLOPs per second (forward 2·B·T²·C, backward 2.5× that).</param>
/// <param name="ElementwiseBytesPerS">Bytes per second an element-wise kernel reads and writes.</param>
/// <param name="LaunchSeconds">Fixed cost of one kernel launch or one transfer.</param>
/// <param name="HostToDeviceBytesPerS">Pinned copy speed to the device.</param>
/// <param name="DeviceToHostBytesPerS">Pinned copy speed to the host.</param>
/// <param name="HostOptimizerBytesPerS">The host optimizer's speed in parameter bytes (4 per parameter) per second.</param>
/// <param name="CopiesOverlap">Whether transfers and host updates run beside the device's compute (GPUs) or take the same cores and time (the CPU accelerator).</param>
/// <param name="Shapes">Products of models' layers measured at their exact shapes (added by each <c>--calibrate</c> with a model); used before the size curve.</param>
/// <param name="Blocks">Models' blocks, heads and embeddings timed per micro-batch shape (added by each <c>--calibrate</c> with a model); used before the analytic block cost.</param>
public sealed record DeviceCalibration(string Device, bool Measured, IReadOnlyList<GemmPoint> Gemm, double AttentionFlopsPerS,
    double ElementwiseBytesPerS, double LaunchSeconds, double HostToDeviceBytesPerS, double DeviceToHostBytesPerS,
    double HostOptimizerBytesPerS, bool CopiesOverlap, IReadOnlyList<GemmShape>? Shapes = null, IReadOnlyList<BlockTiming>? Blocks = null)
{
    /// <summary>The measured timing of <paramref name="config"/>'s block at micro-batches of <paramref name="microBatchSize"/> × <paramref name="seqLen"/>, if any.</summary>
    public BlockTiming? Block(IModelConfig config, int microBatchSize, int seqLen)
    {
        if (Blocks is not { Count: > 0 } blocks) return null;
        var key = BlockProfile.ModelKey(config);
        return blocks.FirstOrDefault(b => b.Model == key && b.MicroBatchSize == microBatchSize && b.SeqLen == seqLen);
    }

    /// <summary>GEMM FLOPs per second for an M×N×K product in <paramref name="layout"/>: the measured shape when there is one, else the size curve.</summary>
    public double GemmFlopsPerS(long m, long n, long k, GemmLayout layout) =>
        Shapes?.FirstOrDefault(x => x.M == m && x.N == n && x.K == k && x.Layout == layout.ToString()) is { } shape ? shape.FlopsPerS : GemmFlopsPerS(m, n, k);

    /// <summary>
    /// The uncalibrated defaults: on the CPU accelerator GEMM 2 GFLOP/s, attention 1 GFLOP/s, element-wise 1 GB/s,
    /// 0.15 ms per launch, bus 5 GB/s each way, host optimizer 4 GB/s of weights, no overlap; on a GPU GEMM 10 TFLOP/s
    /// (5 below 512³), attention 5 TFLOP/s, element-wise 500 GB/s, 10 µs per launch, bus 12 GB/s, host optimizer 8 GB/s, overlap.
    /// </summary>
    public static DeviceCalibration Defaults(string device, bool isCpu) => isCpu
        ? new(device, false, [new(64, 2e9)], 1e9, 1e9, 1.5e-4, 5e9, 5e9, 4e9, false)
        : new(device, false, [new(256, 5e12), new(2048, 1e13)], 5e12, 5e11, 1e-5, 1.2e10, 1.2e10, 8e9, true);

    /// <summary>GEMM FLOPs per second for an M×N×K product.</summary>
    public double GemmFlopsPerS(long m, long n, long k)
    {
        var size = Math.Cbrt((double)m * n * k);
        var points = Gemm;
        if (size <= points[0].Size) return points[0].FlopsPerS;
        if (size >= points[^1].Size) return points[^1].FlopsPerS;
        for (var i = 1; i < points.Count; i++)
        {
            if (size > points[i].Size) continue;
            var f = (Math.Log(size) - Math.Log(points[i - 1].Size)) / (Math.Log(points[i].Size) - Math.Log(points[i - 1].Size));
            return points[i - 1].FlopsPerS + f * (points[i].FlopsPerS - points[i - 1].FlopsPerS);
        }
        return points[^1].FlopsPerS;
    }

    /// <summary>The cache directory: <c>$XDG_CACHE_HOME/l2l/calibration</c>, else <c>~/.cache/l2l/calibration</c>.</summary>
    public static string CacheDirectory =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "l2l", "calibration");

    /// <summary>The cache file of a device: its description with every character but letters, digits, '-' and '.' as '_'.</summary>
    public static string CachePath(string device) =>
        Path.Combine(CacheDirectory, new string(device.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '.' ? ch : '_').ToArray()) + ".json");

    /// <summary>The cached calibration of <paramref name="device"/>, or null when there is none (or it cannot be read).</summary>
    public static DeviceCalibration? Load(string device)
    {
        var path = CachePath(device);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<DeviceCalibration>(File.ReadAllText(path), Json);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    /// <summary>Writes this calibration to its device's cache file; returns the path.</summary>
    public string Save()
    {
        var path = CachePath(Device);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, Json) + Environment.NewLine);
        return path;
    }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>
    /// Measures <paramref name="backend"/> (medians of repeated timings, so contention on a shared machine counts): square GEMMs of growing size (up to 256 on the CPU accelerator, 4096 on a GPU),
    /// causal attention at one head shape, an element-wise kernel over a large buffer and over one element (its launch
    /// cost), pinned copies both ways and the host AdamW over a million parameters. Takes seconds on a GPU and about half
    /// a minute on the CPU accelerator.
    /// </summary>
    /// <param name="backend">The device.</param>
    /// <param name="log">Receives one line per measurement.</param>
    /// <param name="shapes">A model's layer products (see <see cref="StepTimeModel.Products"/>) to time at their exact shapes, added to <paramref name="previous"/>'s.</param>
    /// <param name="previous">The device's earlier calibration, whose measured shapes are kept (re-measured ones replaced).</param>
    /// <param name="blocks">A model and the micro-batch shapes (sequences, tokens each) at which to time its block, head and embedding.</param>
    public static DeviceCalibration Calibrate(Backend backend, Action<string>? log = null, IEnumerable<(int M, int N, int K, GemmLayout Layout)>? shapes = null,
        DeviceCalibration? previous = null, (IModelConfig Config, IReadOnlyList<(int MicroBatchSize, int SeqLen)> Shapes)? blocks = null)
    {
        var cpu = DeviceShape.Of(backend.Accelerator).IsCpu;
        int[] sizes = cpu ? [32, 64, 128, 256] : [256, 512, 1024, 2048, 4096];
        var points = sizes.Select(n => new GemmPoint(n, 2.0 * n * n * n / TimeGemm(backend, n, n, n, GemmLayout.NN, 5))).ToList();
        foreach (var p in points) log?.Invoke($"GEMM {p.Size:F0}^3: {p.FlopsPerS / 1e9:F2} GFLOP/s");
        var (b, t, c, nh) = cpu ? (1, 128, 64, 2) : (8, 1024, 768, 12);
        var attentionRate = 3.5 * 2.0 * b * t * (double)t * c / TimeAttention(backend, b, t, c, nh, 3);
        log?.Invoke($"attention B={b} T={t} C={c}: {attentionRate / 1e9:F2} GFLOP/s");
        var reduce = backend.Get<ReduceOps>();
        var s = backend.ComputeStream;
        long floats = cpu ? 1 << 20 : 1 << 26;
        double elementwise, launch;
        using (var big = backend.Allocate<float>(floats, MemoryCategory.Other, "calibrate.elementwise"))
        {
            big.View.MemSetToZero(s);
            elementwise = 2.0 * floats * sizeof(float) / Median(s, 5, () => reduce.Scale(s, big.View, 1f));
            launch = Median(s, 11, () => reduce.Scale(s, big.View.SubView(0, 1), 1f));
        }
        log?.Invoke($"element-wise: {elementwise / 1e9:F2} GB/s, launch {launch * 1e6:F1} us");
        var bus = BusBenchmark.Run(backend, cpu ? 16L << 20 : 256L << 20, 3);
        log?.Invoke($"bus: host->device {bus.HostToDeviceBytesPerS / 1e9:F2} GB/s, device->host {bus.DeviceToHostBytesPerS / 1e9:F2} GB/s");
        var optimizer = HostOptimizers.Create(new OptimizerSettings(OptimizerKind.AdamW, 1e-3f));
        var n = 1 << 20;
        var (w, g, st) = (new float[n], new float[n], new float[2 * n]);
        optimizer.Step(w, g, st, Span<System.Half>.Empty, 1, 1e-3f, true); // warm-up: first-call costs are not the optimizer's speed
        var clock = Stopwatch.StartNew();
        for (var k = 2; k <= 4; k++) optimizer.Step(w, g, st, Span<System.Half>.Empty, k, 1e-3f, true);
        var host = 3.0 * n * sizeof(float) / clock.Elapsed.TotalSeconds;
        log?.Invoke($"host AdamW: {host / 1e9:F2} GB/s of weights");
        var measuredShapes = new List<GemmShape>();
        // Products too long to time here (over 2·10⁸ FLOPs on the CPU accelerator, 10¹³ on a GPU) are left to the size curve.
        var wanted = (shapes ?? []).Distinct().Where(x => 2.0 * x.M * x.N * x.K <= (cpu ? 2e8 : 1e13)).ToList();
        if (wanted.Count > 0)
        {
            measuredShapes.AddRange(wanted.Select(x => new GemmShape(x.M, x.N, x.K, x.Layout.ToString(), 2.0 * x.M * x.N * x.K / TimeGemm(backend, x.M, x.N, x.K, x.Layout, 3))));
            log?.Invoke($"GEMM at {measuredShapes.Count} layer shapes: {measuredShapes.Min(x => x.FlopsPerS) / 1e9:F2}-{measuredShapes.Max(x => x.FlopsPerS) / 1e9:F2} GFLOP/s");
        }
        var kept = (previous?.Shapes ?? []).Where(old => !measuredShapes.Any(x => x.M == old.M && x.N == old.N && x.K == old.K && x.Layout == old.Layout));
        var timings = new List<BlockTiming>();
        if (blocks is { } model)
        {
            foreach (var (m, length) in model.Shapes)
            {
                var timing = BlockProfile.Measure(backend, model.Config, m, length);
                timings.Add(timing);
                log?.Invoke($"block {m}x{length}: forward {timing.BlockForward * 1e3:F1} ms, backward {timing.BlockBackward * 1e3:F1} ms, " +
                    $"head {timing.Head * 1e3:F1} ms, embedding {timing.Embedding * 1e3:F1} ms");
            }
        }
        var keptBlocks = (previous?.Blocks ?? []).Where(old => !timings.Any(x => x.Model == old.Model && x.MicroBatchSize == old.MicroBatchSize && x.SeqLen == old.SeqLen));
        return new DeviceCalibration(backend.Description, true, points, attentionRate, elementwise, launch,
            bus.HostToDeviceBytesPerS, bus.DeviceToHostBytesPerS, host, !cpu, [.. kept, .. measuredShapes], [.. keptBlocks, .. timings]);
    }

    /// <summary>Seconds of one M×N×K product in <paramref name="layout"/>: the median of <paramref name="repeats"/> after a warm-up.</summary>
    private static double TimeGemm(Backend backend, int m, int n, int k, GemmLayout layout, int repeats)
    {
        var gemm = backend.Get<GemmOps>();
        var s = backend.ComputeStream;
        using var a = backend.Allocate<float>((long)m * k, MemoryCategory.Other, "calibrate.a");
        using var b = backend.Allocate<float>((long)k * n, MemoryCategory.Other, "calibrate.b");
        using var c = backend.Allocate<float>((long)m * n, MemoryCategory.Other, "calibrate.c");
        a.View.MemSetToZero(s);
        b.View.MemSetToZero(s);
        return Median(s, repeats, () => gemm.Gemm(s, c.View, a.View, b.View, m, n, k, layout));
    }

    /// <summary>Seconds of one causal attention forward and backward: the median of <paramref name="repeats"/> after a warm-up.</summary>
    private static double TimeAttention(Backend backend, int b, int t, int c, int nh, int repeats)
    {
        var ops = backend.Get<AttentionOps>();
        var s = backend.ComputeStream;
        long n = (long)b * t;
        using var qkv = backend.Allocate<float>(n * 3 * c, MemoryCategory.Other, "calibrate.qkv");
        using var output = backend.Allocate<float>(n * c, MemoryCategory.Other, "calibrate.output");
        using var lse = backend.Allocate<float>(AttentionOps.LseLength(b, t, nh), MemoryCategory.Other, "calibrate.lse");
        using var dOutput = backend.Allocate<float>(n * c, MemoryCategory.Other, "calibrate.doutput");
        using var dQkv = backend.Allocate<float>(n * 3 * c, MemoryCategory.Other, "calibrate.dqkv");
        using var scratch = backend.Allocate<float>(AttentionOps.BackwardScratchLength(b, t, c, nh), MemoryCategory.Other, "calibrate.scratch");
        qkv.View.MemSetToZero(s);
        dOutput.View.MemSetToZero(s);
        var none = ArrayView<int>.Empty;
        return Median(s, repeats, () =>
        {
            ops.Forward(s, output.View, lse.View, qkv.View, none, none, b, t, c, nh, causal: true);
            ops.Backward(s, dQkv.View, dOutput.View, qkv.View, output.View, lse.View, scratch.View, none, none, b, t, c, nh, causal: true);
        });
    }

    // Medians, not best times: a plan should predict the speed a run typically gets on this machine, contention included.
    private static double Median(AcceleratorStream stream, int repeats, Action pass)
    {
        pass();
        stream.Synchronize();
        var times = new double[repeats];
        for (var r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            pass();
            stream.Synchronize();
            times[r] = clock.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return times[repeats / 2];
    }
}
