// What every host optimizer shares: argument checks, pinning, and splitting a slice into fixed-size chunks that
// run on the calling thread (small slices) or on the calling thread plus thread-pool helpers (large ones).
using System.Numerics;
using System.Runtime.CompilerServices;

namespace L2L.Training.Optim;

/// <summary>A pinned slice: pointers stay valid for the duration of one <c>Step</c> call.</summary>
internal readonly unsafe struct Slice(float* param, void* grad, float* m, float* v, ushort* half, nint length, bool copyIsBf16 = false)
{
    public readonly float* Param = param;
    public readonly void* Grad = grad;
    public readonly float* M = m;
    public readonly float* V = v;
    public readonly ushort* Half = half;
    public readonly nint Length = length;

    /// <summary>Whether <see cref="Half"/> (the 16-bit copy of the updated weights) receives BF16 bits rather than FP16.</summary>
    public readonly bool CopyIsBf16 = copyIsBf16;
}

/// <summary>Reads gradients of one element type; a struct type argument, so the JIT specialises each kernel per dtype.</summary>
internal unsafe interface IGradReader
{
    static abstract void Load(void* grad, nint i, out Vector<float> g0, out Vector<float> g1);
    static abstract float Load(void* grad, nint i);
}

internal readonly unsafe struct SingleGrads : IGradReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(void* grad, nint i, out Vector<float> g0, out Vector<float> g1)
    {
        g0 = Vector.Load((float*)grad + i);
        g1 = Vector.Load((float*)grad + i + Vector<float>.Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(void* grad, nint i) => ((float*)grad)[i];
}

internal readonly unsafe struct HalfGrads : IGradReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(void* grad, nint i, out Vector<float> g0, out Vector<float> g1) =>
        HalfConvert.LoadHalf((ushort*)grad + i, out g0, out g1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(void* grad, nint i) => HalfConvert.ToSingle(((ushort*)grad)[i]);
}

/// <summary>Shared plumbing of the host optimizers.</summary>
internal abstract unsafe class HostOptimizerBase : IHostOptimizer
{
    /// <summary>Elements per chunk: the unit of parallel work and of LAMB's partial norms (so those never depend on the thread count).
    /// 16K floats keep one chunk's arrays of an AdamW update (about 0.5 MB) inside a core's L2.</summary>
    internal const int ChunkSize = 1 << 14;

    /// <summary>Slices up to this many elements run on the calling thread: waking helpers would cost more than they save.</summary>
    internal const int InlineThreshold = 2 * ChunkSize;

    private readonly Stack<ChunkJob> _jobs = new();

    protected HostOptimizerBase(OptimizerSettings settings, int threads)
    {
        Settings = settings;
        Threads = threads;
    }

    protected OptimizerSettings Settings { get; }

    /// <summary>Most threads one Step uses, the calling thread included.</summary>
    internal int Threads { get; }

    public abstract OptimizerKind Kind { get; }

    public abstract int StateFloatsPerParam { get; }

    public void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay)
    {
        Check(param.Length, grad.Length, state.Length, half.Length, step);
        fixed (float* p = param)
        fixed (float* g = grad)
        fixed (float* s = state)
        fixed (Half* h = half)
        {
            var slice = MakeSlice(p, g, s, h, param.Length);
            Update(slice, halfGrads: false, step, lr, decay);
        }
    }

    public void Step(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay)
    {
        Check(param.Length, grad.Length, state.Length, half.Length, step);
        fixed (float* p = param)
        fixed (Half* g = grad)
        fixed (float* s = state)
        fixed (Half* h = half)
        {
            var slice = MakeSlice(p, g, s, h, param.Length);
            Update(slice, halfGrads: true, step, lr, decay);
        }
    }

    public void StepWithBf16Copy(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay)
    {
        Check(param.Length, grad.Length, state.Length, bf16.Length, step);
        fixed (float* p = param)
        fixed (float* g = grad)
        fixed (float* s = state)
        fixed (L2L.Kernels.Bf16* h = bf16)
        {
            var slice = MakeSlice(p, g, s, (ushort*)h, param.Length, copyIsBf16: true);
            Update(slice, halfGrads: false, step, lr, decay);
        }
    }

    public void StepWithBf16Copy(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay)
    {
        Check(param.Length, grad.Length, state.Length, bf16.Length, step);
        fixed (float* p = param)
        fixed (Half* g = grad)
        fixed (float* s = state)
        fixed (L2L.Kernels.Bf16* h = bf16)
        {
            var slice = MakeSlice(p, g, s, (ushort*)h, param.Length, copyIsBf16: true);
            Update(slice, halfGrads: true, step, lr, decay);
        }
    }

    /// <summary>Updates a pinned, checked slice.</summary>
    protected abstract void Update(in Slice slice, bool halfGrads, int step, float lr, bool decay);

    protected static int ChunkCount(nint length) => (int)((length + ChunkSize - 1) / ChunkSize);

    /// <summary>Whether a slice is large enough, and the thread limit high enough, to spread it over helper threads.</summary>
    protected bool UseHelpers(nint length) => Threads > 1 && length > InlineThreshold;

    /// <summary>Rents a job of this optimizer's pool.</summary>
    protected TJob RentJob<TJob>() where TJob : ChunkJob, new() => ChunkJob.Rent<TJob>(_jobs);

    /// <summary>Bias correction <c>1 - beta^step</c> in double, from the closed form so any step can be resumed exactly.</summary>
    protected static double BiasCorrection(float beta, int step) => 1.0 - Math.Pow(beta, step);

    private Slice MakeSlice(float* p, void* g, float* s, Half* h, int length) => MakeSlice(p, g, s, (ushort*)h, length, copyIsBf16: false);

    private Slice MakeSlice(float* p, void* g, float* s, ushort* copy, int length, bool copyIsBf16) =>
        new(p, g, s, StateFloatsPerParam == 2 ? s + length : null, copy, length, copyIsBf16);

    private void Check(int paramLength, int gradLength, int stateLength, int halfLength, int step)
    {
        if (gradLength != paramLength)
            throw new ArgumentException($"grad has {gradLength} elements, param {paramLength}.", "grad");
        if ((long)stateLength != (long)StateFloatsPerParam * paramLength)
            throw new ArgumentException($"{Kind} needs {StateFloatsPerParam} state floats per parameter ({(long)StateFloatsPerParam * paramLength}); state has {stateLength}.", "state");
        if (halfLength != 0 && halfLength != paramLength)
            throw new ArgumentException($"half must be empty or have {paramLength} elements; it has {halfLength}.", "half");
        if (step < 1)
            throw new ArgumentOutOfRangeException(nameof(step), step, "step is 1-based.");
    }
}
