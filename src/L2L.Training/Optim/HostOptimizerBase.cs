// What every host optimizer shares: argument checks, pinning, and splitting a slice into fixed-size chunks that
// run on the calling thread (small slices) or on the calling thread plus thread-pool helpers (large ones).
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace L2L.Training.Optim;

/// <summary>The element type of a slice's gradients.</summary>
internal enum GradFormat
{
    /// <summary>FP32.</summary>
    Single,
    /// <summary>IEEE FP16.</summary>
    Half,
    /// <summary>BF16 (the upper 16 bits of an FP32).</summary>
    Bf16,
}

/// <summary>A pinned slice: pointers stay valid for the duration of one <c>Step</c> call.</summary>
internal readonly unsafe struct Slice(float* param, void* grad, GradFormat gradFormat, float gradFactor, float* m, float* v, ushort* half, nint length,
    bool copyIsBf16)
{
    public readonly float* Param = param;
    public readonly void* Grad = grad;

    /// <summary>How <see cref="Grad"/> is stored; every format is widened to FP32 as it is loaded.</summary>
    public readonly GradFormat GradFormat = gradFormat;

    /// <summary>Every (widened) gradient is multiplied by this in FP32 as it is loaded; 1 leaves it unchanged bit for bit.</summary>
    public readonly float GradFactor = gradFactor;
    public readonly float* M = m;
    public readonly float* V = v;
    public readonly ushort* Half = half;
    public readonly nint Length = length;

    /// <summary>Whether <see cref="Half"/> (the 16-bit copy of the updated weights) receives BF16 bits rather than FP16.</summary>
    public readonly bool CopyIsBf16 = copyIsBf16;
}

/// <summary>
/// Reads gradients of one element type, widened to FP32 and multiplied by the slice's gradient factor (one IEEE
/// multiply, as scaling the FP32 gradients in place before the step would do); a struct type argument, so the JIT
/// specialises each kernel per dtype.
/// </summary>
internal unsafe interface IGradReader
{
    static abstract void Load(void* grad, nint i, Vector<float> factor, out Vector<float> g0, out Vector<float> g1);
    static abstract float Load(void* grad, nint i, float factor);
}

/// <summary>An optimizer's element loop over part of a slice, specialised per gradient reader and copy writer.</summary>
/// <typeparam name="TConstants">The optimizer's per-tensor constants.</typeparam>
internal interface ISliceKernel<TConstants> where TConstants : struct
{
    static abstract void Kernel<TGrad, TCopy>(in Slice s, in TConstants c, nint start, nint end) where TGrad : struct, IGradReader where TCopy : struct, ICopyWriter;
}

/// <summary>Picks the specialisation of an optimizer's element loop for a slice's gradient format and copy format.</summary>
internal static class SliceDispatch
{
    /// <summary>Runs <typeparamref name="TKernel"/>'s loop over elements [<paramref name="start"/>, <paramref name="end"/>) of <paramref name="s"/>.</summary>
    public static void Run<TKernel, TConstants>(in Slice s, in TConstants c, nint start, nint end)
        where TKernel : ISliceKernel<TConstants> where TConstants : struct
    {
        switch (s.GradFormat, s.CopyIsBf16)
        {
            case (GradFormat.Single, false): TKernel.Kernel<SingleGrads, HalfCopy>(s, c, start, end); break;
            case (GradFormat.Half, false): TKernel.Kernel<HalfGrads, HalfCopy>(s, c, start, end); break;
            case (GradFormat.Bf16, false): TKernel.Kernel<Bf16Grads, HalfCopy>(s, c, start, end); break;
            case (GradFormat.Single, true): TKernel.Kernel<SingleGrads, Bf16Copy>(s, c, start, end); break;
            case (GradFormat.Half, true): TKernel.Kernel<HalfGrads, Bf16Copy>(s, c, start, end); break;
            default: TKernel.Kernel<Bf16Grads, Bf16Copy>(s, c, start, end); break;
        }
    }
}

internal readonly unsafe struct SingleGrads : IGradReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(void* grad, nint i, Vector<float> factor, out Vector<float> g0, out Vector<float> g1)
    {
        g0 = Vector.Load((float*)grad + i) * factor;
        g1 = Vector.Load((float*)grad + i + Vector<float>.Count) * factor;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(void* grad, nint i, float factor) => ((float*)grad)[i] * factor;
}

internal readonly unsafe struct HalfGrads : IGradReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(void* grad, nint i, Vector<float> factor, out Vector<float> g0, out Vector<float> g1)
    {
        HalfConvert.LoadHalf((ushort*)grad + i, out g0, out g1);
        g0 *= factor;
        g1 *= factor;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(void* grad, nint i, float factor) => HalfConvert.ToSingle(((ushort*)grad)[i]) * factor;
}

/// <summary>BF16 gradients: widening is exact (the bits move to the upper half of an FP32).</summary>
internal readonly unsafe struct Bf16Grads : IGradReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(void* grad, nint i, Vector<float> factor, out Vector<float> g0, out Vector<float> g1)
    {
        Vector.Widen(Vector.Load((ushort*)grad + i), out Vector<uint> a, out Vector<uint> b);
        g0 = Vector.AsVectorSingle(Vector.ShiftLeft(a, 16)) * factor;
        g1 = Vector.AsVectorSingle(Vector.ShiftLeft(b, 16)) * factor;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(void* grad, nint i, float factor) => BitConverter.UInt32BitsToSingle((uint)((ushort*)grad)[i] << 16) * factor;
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

    public void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay) =>
        Step(param, grad, GradFormat.Single, 1f, state, MemoryMarshal.Cast<Half, ushort>(half), copyIsBf16: false, step, lr, decay);

    public void Step(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay) =>
        Step(param, MemoryMarshal.Cast<Half, ushort>(grad), GradFormat.Half, 1f, state, MemoryMarshal.Cast<Half, ushort>(half), copyIsBf16: false, step, lr, decay);

    public void Step(Span<float> param, ReadOnlySpan<L2L.Kernels.Bf16> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay) =>
        Step(param, MemoryMarshal.Cast<L2L.Kernels.Bf16, ushort>(grad), GradFormat.Bf16, 1f, state, MemoryMarshal.Cast<Half, ushort>(half), copyIsBf16: false, step, lr, decay);

    public void StepWithBf16Copy(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay) =>
        Step(param, grad, GradFormat.Single, 1f, state, MemoryMarshal.Cast<L2L.Kernels.Bf16, ushort>(bf16), copyIsBf16: true, step, lr, decay);

    public void StepWithBf16Copy(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay) =>
        Step(param, MemoryMarshal.Cast<Half, ushort>(grad), GradFormat.Half, 1f, state, MemoryMarshal.Cast<L2L.Kernels.Bf16, ushort>(bf16), copyIsBf16: true, step, lr, decay);

    public void StepWithBf16Copy(Span<float> param, ReadOnlySpan<L2L.Kernels.Bf16> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay) =>
        Step(param, MemoryMarshal.Cast<L2L.Kernels.Bf16, ushort>(grad), GradFormat.Bf16, 1f, state, MemoryMarshal.Cast<L2L.Kernels.Bf16, ushort>(bf16), copyIsBf16: true, step, lr, decay);

    /// <summary>
    /// The one entry every overload (and the param server) goes through: gradients of <paramref name="format"/>
    /// (<typeparamref name="TGrad"/> is float for FP32, ushort for the 16-bit formats), widened and multiplied by
    /// <paramref name="gradFactor"/> as they are loaded; <paramref name="copy"/> empty or receiving the FP16 or BF16
    /// bits of the updated weights.
    /// </summary>
    internal void Step<TGrad>(Span<float> param, ReadOnlySpan<TGrad> grad, GradFormat format, float gradFactor, Span<float> state, Span<ushort> copy,
        bool copyIsBf16, int step, float lr, bool decay) where TGrad : unmanaged
    {
        if ((format == GradFormat.Single) != (typeof(TGrad) == typeof(float)) || (format != GradFormat.Single && typeof(TGrad) != typeof(ushort)))
            throw new ArgumentException($"{format} gradients cannot be read from a span of {typeof(TGrad).Name}.", nameof(grad));
        Check(param.Length, grad.Length, state.Length, copy.Length, step);
        fixed (float* p = param)
        fixed (TGrad* g = grad)
        fixed (float* s = state)
        fixed (ushort* h = copy)
        {
            var slice = new Slice(p, g, format, gradFactor, s, StateFloatsPerParam == 2 ? s + param.Length : null, h, param.Length, copyIsBf16);
            Update(slice, step, lr, decay);
        }
    }

    /// <summary>Updates a pinned, checked slice.</summary>
    protected abstract void Update(in Slice slice, int step, float lr, bool decay);

    protected static int ChunkCount(nint length) => (int)((length + ChunkSize - 1) / ChunkSize);

    /// <summary>Whether a slice is large enough, and the thread limit high enough, to spread it over helper threads.</summary>
    protected bool UseHelpers(nint length) => Threads > 1 && length > InlineThreshold;

    /// <summary>Rents a job of this optimizer's pool.</summary>
    protected TJob RentJob<TJob>() where TJob : ChunkJob, new() => ChunkJob.Rent<TJob>(_jobs);

    /// <summary>Bias correction <c>1 - beta^step</c> in double, from the closed form so any step can be resumed exactly.</summary>
    protected static double BiasCorrection(float beta, int step) => 1.0 - Math.Pow(beta, step);

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
