// Host optimizer throughput against the machine's memory bandwidth: each optimizer and gradient dtype with FP16
// copy-out, and a STREAM triad run on the same threads and chunks, so the ratio says how close to the limit we are.
using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using L2L.Training.Optim;

namespace L2L.Training.Benchmarks;

/// <summary>The machine a benchmark ran on.</summary>
/// <param name="Cpu">Processor model name.</param>
/// <param name="Cores">Logical processors visible to the process.</param>
/// <param name="Os">Operating system description.</param>
/// <param name="Dotnet">.NET runtime description.</param>
/// <param name="VectorBits">Width of <see cref="Vector{T}"/> the JIT chose, in bits.</param>
/// <param name="MemoryBytes">Memory available to the process.</param>
public sealed record MachineInfo(string Cpu, int Cores, string Os, string Dotnet, int VectorBits, long MemoryBytes)
{
    /// <summary>Describes the current machine.</summary>
    public static MachineInfo Current() => new(
        CpuName(),
        Environment.ProcessorCount,
        RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription,
        Vector.IsHardwareAccelerated ? Vector<byte>.Count * 8 : 0,
        GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);

    private static string CpuName()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                {
                    if (line.StartsWith("model name", StringComparison.Ordinal))
                        return line[(line.IndexOf(':') + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }
        return Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER") ?? RuntimeInformation.ProcessArchitecture.ToString();
    }
}

/// <summary>Throughput of one optimizer and gradient dtype.</summary>
/// <param name="Optimizer">sgd, adamw or lamb.</param>
/// <param name="GradDtype">fp32 or fp16.</param>
/// <param name="BytesPerParam">Bytes read and written per parameter by one step, every array counted, FP16 copy-out included.</param>
/// <param name="Seconds">Best time of one step over the whole slice.</param>
/// <param name="ParamsPerS">Parameters updated per second.</param>
/// <param name="BytesPerS"><paramref name="ParamsPerS"/> times <paramref name="BytesPerParam"/>.</param>
/// <param name="TriadBytesPerS">The best STREAM triad bandwidth of the whole run (the machine's figure).</param>
/// <param name="Ratio"><paramref name="BytesPerS"/> / <paramref name="TriadBytesPerS"/>.</param>
/// <param name="AllocatedBytesPerStep">Managed bytes the calling thread allocated per timed step.</param>
/// <param name="NearbyTriadBytesPerS">A triad measured right after this result, which shows how much background load there was.</param>
public sealed record HostOptimizerResult(
    string Optimizer,
    string GradDtype,
    int BytesPerParam,
    double Seconds,
    double ParamsPerS,
    double BytesPerS,
    double TriadBytesPerS,
    double Ratio,
    double AllocatedBytesPerStep,
    double NearbyTriadBytesPerS);

/// <summary>One run of the host optimizer benchmark.</summary>
/// <param name="Machine">Where it ran.</param>
/// <param name="Params">Parameters in the slice each step updates.</param>
/// <param name="Threads">Threads per step (and for the triad).</param>
/// <param name="Repeats">Timed repetitions; the best is reported.</param>
/// <param name="LoadAverage">The one-minute load average when the run started (Linux), since other processes share the memory bus.</param>
/// <param name="TriadBytesPerS">Best STREAM triad bandwidth of the whole run, counting 12 bytes per element.</param>
/// <param name="Results">One entry per optimizer and gradient dtype.</param>
public sealed record HostOptimizerReport(
    MachineInfo Machine,
    long Params,
    int Threads,
    int Repeats,
    double? LoadAverage,
    double TriadBytesPerS,
    IReadOnlyList<HostOptimizerResult> Results)
{

    /// <summary>The report as JSON with snake_case names.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);
}

/// <summary>Measures the host optimizers' update rate and the machine's STREAM triad bandwidth.</summary>
public static class HostOptimizerBenchmark
{
    /// <summary>Default slice size: 64M parameters, so every array is far larger than a last-level cache.</summary>
    public const int DefaultParams = 64 << 20;

    /// <summary>
    /// Bytes one step moves per parameter, counting every array read and every array written once:
    /// parameters, gradients (4 or 2 bytes), state (m and v) and the FP16 copy-out. LAMB reads the weights and
    /// moments twice, because its trust ratio needs a pass over the whole slice before any weight changes.
    /// </summary>
    public static int BytesPerParam(OptimizerKind kind, bool halfGrads, bool halfCopy)
    {
        var grad = halfGrads ? 2 : 4;
        var copy = halfCopy ? 2 : 0;
        return kind switch
        {
            OptimizerKind.Sgd => 4 + grad + 4 + copy,                          // read p, g; write p
            OptimizerKind.AdamW => 4 + grad + 8 + 12 + copy,                   // read p, g, m, v; write p, m, v
            OptimizerKind.Lamb => (4 + grad + 8 + 8) + (12 + 4) + copy,        // pass 1: read p, g, m, v; write m, v. pass 2: read p, m, v; write p
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    /// <summary>Runs the triad and every optimizer and gradient dtype on one slice of <paramref name="parameters"/> elements.</summary>
    /// <param name="parameters">Slice length.</param>
    /// <param name="threads">Threads per step, the calling thread included.</param>
    /// <param name="repeats">Timed repetitions per measurement (the best counts).</param>
    /// <param name="log">Receives progress lines.</param>
    public static HostOptimizerReport Run(int parameters, int threads, int repeats = 5, Action<string>? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(parameters, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var loadAverage = LoadAverage();

        // A triad runs right after each optimizer measurement too: the memory bus may be shared with other
        // processes, and the best triad of the whole run is the best estimate of what the machine can do.
        var triadArrays = new TriadArrays(parameters);
        log?.Invoke($"triad: 3 arrays of {parameters:N0} floats, {threads} threads, best of {Math.Max(repeats, 10)}");
        var triad = triadArrays.Measure(threads, Math.Max(repeats, 10));
        log?.Invoke($"triad: {triad / 1e9:F2} GB/s");

        var p = GC.AllocateUninitializedArray<float>(parameters);
        var g = GC.AllocateUninitializedArray<float>(parameters);
        var gh = GC.AllocateUninitializedArray<Half>(parameters);
        var state = new float[2 * (long)parameters];
        var half = GC.AllocateUninitializedArray<Half>(parameters);
        Fill(p, 1, 0.5f);
        Fill(g, 2, 1e-3f);
        HalfConvert.ToHalf(g, gh);
        half.AsSpan().Clear();

        var results = new List<HostOptimizerResult>();
        foreach (var kind in new[] { OptimizerKind.Sgd, OptimizerKind.AdamW, OptimizerKind.Lamb })
        {
            var opt = HostOptimizers.Create(new OptimizerSettings(kind, 1e-4f, WeightDecay: 0.01f), threads);
            var slice = state.AsSpan(0, opt.StateFloatsPerParam * parameters);
            foreach (var halfGrads in new[] { false, true })
            {
                slice.Clear();
                var step = 1;
                StepOnce(opt, p, g, gh, slice, half, step++, halfGrads); // warm-up: JIT, pools, page faults
                var best = double.MaxValue;
                var allocated = GC.GetAllocatedBytesForCurrentThread();
                for (var r = 0; r < repeats; r++)
                {
                    var t = Stopwatch.GetTimestamp();
                    StepOnce(opt, p, g, gh, slice, half, step++, halfGrads);
                    best = Math.Min(best, Stopwatch.GetElapsedTime(t).TotalSeconds);
                }
                allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
                var nearbyTriad = triadArrays.Measure(threads, repeats);
                triad = Math.Max(triad, nearbyTriad);
                var bytes = BytesPerParam(kind, halfGrads, halfCopy: true);
                var paramsPerS = parameters / best;
                var result = new HostOptimizerResult(
                    kind.ToString().ToLowerInvariant(),
                    halfGrads ? "fp16" : "fp32",
                    bytes,
                    best,
                    paramsPerS,
                    paramsPerS * bytes,
                    0,
                    0,
                    (double)allocated / repeats,
                    nearbyTriad);
                log?.Invoke($"{result.Optimizer} {result.GradDtype}: {result.ParamsPerS / 1e6:F0} M params/s, {result.BytesPerS / 1e9:F2} GB/s (triad right after: {nearbyTriad / 1e9:F2} GB/s)");
                results.Add(result);
            }
        }
        // Ratios use the run's best triad: the fairest estimate of the machine's bandwidth, and the conservative one.
        var final = results.Select(r => r with { TriadBytesPerS = triad, Ratio = r.BytesPerS / triad }).ToList();
        return new HostOptimizerReport(MachineInfo.Current(), parameters, threads, repeats, loadAverage, triad, final);
    }

    /// <summary>
    /// STREAM triad <c>a[i] = b[i] + s * c[i]</c> over three arrays of <paramref name="length"/> floats, split into
    /// the optimizers' chunks over <paramref name="threads"/> threads; best of <paramref name="repeats"/>, in bytes per
    /// second counting 12 bytes per element as STREAM does.
    /// </summary>
    public static double MeasureTriad(int length, int threads, int repeats) => new TriadArrays(length).Measure(threads, repeats);

    private sealed class TriadArrays
    {
        private readonly float[] _a, _b, _c;

        public TriadArrays(int length)
        {
            _a = GC.AllocateUninitializedArray<float>(length);
            _b = GC.AllocateUninitializedArray<float>(length);
            _c = GC.AllocateUninitializedArray<float>(length);
            Fill(_a, 3, 1f);
            Fill(_b, 4, 1f);
            Fill(_c, 5, 1f);
        }

        public double Measure(int threads, int repeats)
        {
            var best = double.MaxValue;
            for (var r = 0; r <= repeats; r++)
            {
                var t = Stopwatch.GetTimestamp();
                TriadJob.Run(_a, _b, _c, 3f, threads);
                var seconds = Stopwatch.GetElapsedTime(t).TotalSeconds;
                if (r > 0) best = Math.Min(best, seconds); // the first run brings the arrays back from wherever the last measurement left them
            }
            return 12.0 * _a.Length / best;
        }
    }

    private static void StepOnce(IHostOptimizer opt, float[] p, float[] g, Half[] gh, Span<float> state, Half[] half, int step, bool halfGrads)
    {
        if (halfGrads) opt.Step(p, gh, state, half, step, 1e-4f, decay: true);
        else opt.Step(p, g, state, half, step, 1e-4f, decay: true);
    }

    private static void Fill(Span<float> x, uint seed, float scale)
    {
        // A cheap hash, not System.Random: filling gigabytes must not dominate the benchmark's run time.
        var state = seed * 0x9E3779B9u + 1;
        for (var i = 0; i < x.Length; i++)
        {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            x[i] = scale * ((state >> 8) * (1f / (1 << 24)) - 0.5f);
        }
    }

    private static double? LoadAverage()
    {
        try
        {
            if (!File.Exists("/proc/loadavg")) return null;
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.TryParse(first, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private sealed unsafe class TriadJob : ChunkJob
    {
        private static readonly Stack<ChunkJob> Pool = new();
        private float* _a, _b, _c;
        private float _s;
        private nint _length;

        public static void Run(float[] a, float[] b, float[] c, float s, int threads)
        {
            fixed (float* pa = a)
            fixed (float* pb = b)
            fixed (float* pc = c)
            {
                var job = Rent<TriadJob>(Pool);
                job._a = pa;
                job._b = pb;
                job._c = pc;
                job._s = s;
                job._length = a.Length;
                job.RunAndRelease((int)((a.LongLength + HostOptimizerBase.ChunkSize - 1) / HostOptimizerBase.ChunkSize), threads);
            }
        }

        protected override void RunChunk(int index)
        {
            var i = (nint)index * HostOptimizerBase.ChunkSize;
            var end = Math.Min(i + HostOptimizerBase.ChunkSize, _length);
            var s = _s;
            if (Vector.IsHardwareAccelerated)
            {
                var w = Vector<float>.Count;
                var sv = new Vector<float>(s);
                for (; i <= end - w; i += w)
                    (Vector.Load(_b + i) + sv * Vector.Load(_c + i)).Store(_a + i);
            }
            for (; i < end; i++) _a[i] = _b[i] + s * _c[i];
        }
    }
}
