// AdamW with FP16 copy-out three ways: a plain scalar loop, the host optimizer on one thread, and on all cores.
using BenchmarkDotNet.Attributes;
using L2L.Training.Optim;

namespace L2L.Bench;

/// <summary>Scalar reference vs vectorised single-thread vs vectorised parallel AdamW, FP32 gradients, FP16 copy-out.</summary>
[MemoryDiagnoser]
public class AdamWBenchmarks
{
    private const float LearningRate = 1e-4f;
    private static readonly OptimizerSettings Settings = new(OptimizerKind.AdamW, LearningRate, WeightDecay: 0.01f);

    private float[] _param = [];
    private float[] _grad = [];
    private float[] _state = [];
    private Half[] _half = [];
    private IHostOptimizer _single = null!;
    private IHostOptimizer _parallel = null!;
    private int _step;

    /// <summary>Parameters per slice: in L2, in the last-level cache, and far beyond it.</summary>
    [Params(1 << 16, 1 << 20, 1 << 24)]
    public int Size { get; set; }

    /// <summary>Allocates the slice and both optimizers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        _param = new float[Size];
        _grad = new float[Size];
        _state = new float[2 * Size];
        _half = new Half[Size];
        for (var i = 0; i < Size; i++)
        {
            _param[i] = (float)(rng.NextDouble() - 0.5);
            _grad[i] = (float)((rng.NextDouble() - 0.5) * 1e-3);
        }
        _single = HostOptimizers.Create(Settings, threads: 1);
        _parallel = HostOptimizers.Create(Settings);
    }

    /// <summary>A plain per-element loop in PyTorch's order with scalar <c>(Half)</c> casts.</summary>
    [Benchmark(Baseline = true)]
    public void ScalarReference()
    {
        var step = ++_step;
        var n = _param.Length;
        var negStepSize = (float)-(LearningRate / (1.0 - Math.Pow(Settings.Beta1, step)));
        var bc2Sqrt = (float)Math.Sqrt(1.0 - Math.Pow(Settings.Beta2, step));
        var decayFactor = (float)(1.0 - (double)LearningRate * Settings.WeightDecay);
        var oneMinusBeta1 = (float)(1.0 - Settings.Beta1);
        var oneMinusBeta2 = (float)(1.0 - Settings.Beta2);
        var p = _param;
        var g = _grad;
        var s = _state;
        var h = _half;
        for (var i = 0; i < n; i++)
        {
            var pi = p[i] * decayFactor;
            var m = s[i] + oneMinusBeta1 * (g[i] - s[i]);
            var v = s[n + i] * Settings.Beta2 + oneMinusBeta2 * g[i] * g[i];
            pi = pi + negStepSize * m / (MathF.Sqrt(v) / bc2Sqrt + Settings.Epsilon);
            p[i] = pi;
            s[i] = m;
            s[n + i] = v;
            h[i] = (Half)pi;
        }
    }

    /// <summary>The host optimizer limited to the calling thread.</summary>
    [Benchmark]
    public void VectorisedSingleThread() => _single.Step(_param, _grad, _state, _half, ++_step, LearningRate, decay: true);

    /// <summary>The host optimizer on every logical processor.</summary>
    [Benchmark]
    public void VectorisedParallel() => _parallel.Step(_param, _grad, _state, _half, ++_step, LearningRate, decay: true);
}
