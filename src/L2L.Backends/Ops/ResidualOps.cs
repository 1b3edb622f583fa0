// Launchers for the residual kernels.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Residual add and gradient accumulation, loaded once per accelerator. The <see cref="Bf16"/> and <see cref="Half"/>
/// overloads (kernels loaded on first use) add in FP32 and round once into the output's type.
/// </summary>
public sealed class ResidualOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _add;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _accumulate;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float> _scaledAdd;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public ResidualOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _add = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(ResidualKernels.ResidualForwardKernel);
        _accumulate = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ResidualKernels.AccumulateKernel);
        _scaledAdd = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float>(ResidualKernels.ScaledAddKernel);
        _bf16 = new(() => new Typed<Bf16, Bf16Storage>(_accelerator));
        _fp16 = new(() => new Typed<Half, Fp16Storage>(_accelerator));
        _bf16Set = new(() => Set<Bf16>.Of(_bf16.Value));
        _fp16Set = new(() => Set<Half>.Of(_fp16.Value));
        _fp32 = new Set<float>(_add, _accumulate, _accumulate, _scaledAdd);
    }

    private readonly Set<float> _fp32;
    private readonly Lazy<Set<Bf16>> _bf16Set;
    private readonly Lazy<Set<Half>> _fp16Set;

    private readonly Lazy<Typed<Bf16, Bf16Storage>> _bf16;
    private readonly Lazy<Typed<Half, Fp16Storage>> _fp16;

    private sealed class Typed<T, S> where T : unmanaged where S : struct, IStorage<T>
    {
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> Add;
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> Accumulate;
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>> AccumulateIntoFloat;
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, float, float> ScaledAdd;

        public Typed(Accelerator a)
        {
            Add = a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>>(ResidualKernels.ResidualForwardGenericKernel<T, S>);
            Accumulate = a.LoadKernel<ArrayView<T>, ArrayView<T>>(ResidualKernels.AccumulateGenericKernel<T, S, T, S>);
            AccumulateIntoFloat = a.LoadKernel<ArrayView<float>, ArrayView<T>>(ResidualKernels.AccumulateGenericKernel<float, Fp32Storage, T, S>);
            ScaledAdd = a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, float, float>(ResidualKernels.ScaledAddGenericKernel<T, S>);
        }
    }

    // The kernels of one storage type, FP32's being the FP32 overloads' own.
    private sealed record Set<T>(
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> Add,
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> Accumulate,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>> AccumulateIntoFloat,
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, float, float> ScaledAdd) where T : unmanaged
    {
        public static Set<T> Of<S>(Typed<T, S> k) where S : struct, IStorage<T> => new(k.Add, k.Accumulate, k.AccumulateIntoFloat, k.ScaledAdd);
    }

    private Set<T> Kernels<T>() where T : unmanaged =>
        StorageDispatch.Pick<T, Set<T>, Set<Bf16>, Set<Half>>(_fp32, _bf16Set, _fp16Set);

    /// <summary><c>output = a + b</c> over the storage type <typeparamref name="T"/> (FP32 sum, rounded once); for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Add<T>(AcceleratorStream stream, ArrayView<T> output, ArrayView<T> a, ArrayView<T> b) where T : unmanaged
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        Kernels<T>().Add(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b);
    }

    /// <summary><c>target += source</c> over the storage type <typeparamref name="T"/> (FP32 sum, rounded once); for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Accumulate<T>(AcceleratorStream stream, ArrayView<T> target, ArrayView<T> source) where T : unmanaged =>
        Accumulate(Kernels<T>().Accumulate, stream, target, source);

    /// <summary><c>target (FP32) += source</c> of the storage type <typeparamref name="T"/> (widened exactly); for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Accumulate<T>(AcceleratorStream stream, ArrayView<float> target, ArrayView<T> source) where T : unmanaged =>
        Accumulate(Kernels<T>().AccumulateIntoFloat, stream, target, source);

    /// <summary>
    /// <c>output = wa * a + wb * b</c> over the storage type <typeparamref name="T"/> (formed in FP32, rounded once); for
    /// float, the FP32 overload's kernel. <c>output</c> may alias an input.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void ScaledAdd<T>(AcceleratorStream stream, ArrayView<T> output, ArrayView<T> a, float wa, ArrayView<T> b, float wb) where T : unmanaged
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        Kernels<T>().ScaledAdd(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b, wa, wb);
    }

    /// <summary><c>output = a + b</c> in BF16 storage (FP32 sum, rounded once), all of one length; <c>output</c> may alias an input.</summary>
    public void Add(AcceleratorStream stream, ArrayView<Bf16> output, ArrayView<Bf16> a, ArrayView<Bf16> b) => Add(_bf16.Value, stream, output, a, b);

    /// <summary><c>output = a + b</c> in FP16 storage (FP32 sum, rounded once), all of one length; <c>output</c> may alias an input.</summary>
    public void Add(AcceleratorStream stream, ArrayView<Half> output, ArrayView<Half> a, ArrayView<Half> b) => Add(_fp16.Value, stream, output, a, b);

    /// <summary><c>target += source</c> in BF16 storage (FP32 sum, rounded once).</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<Bf16> target, ArrayView<Bf16> source) => Accumulate(_bf16.Value.Accumulate, stream, target, source);

    /// <summary><c>target += source</c> in FP16 storage (FP32 sum, rounded once).</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<Half> target, ArrayView<Half> source) => Accumulate(_fp16.Value.Accumulate, stream, target, source);

    /// <summary><c>target += source</c>: an FP32 accumulator and a BF16 source (widened exactly).</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<float> target, ArrayView<Bf16> source) => Accumulate(_bf16.Value.AccumulateIntoFloat, stream, target, source);

    /// <summary><c>target += source</c>: an FP32 accumulator and an FP16 source (widened exactly).</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<float> target, ArrayView<Half> source) => Accumulate(_fp16.Value.AccumulateIntoFloat, stream, target, source);

    private void Add<T, S>(Typed<T, S> k, AcceleratorStream stream, ArrayView<T> output, ArrayView<T> a, ArrayView<T> b)
        where T : unmanaged where S : struct, IStorage<T>
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        k.Add(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b);
    }

    private void Accumulate<TT, TS>(Action<AcceleratorStream, KernelConfig, ArrayView<TT>, ArrayView<TS>> kernel, AcceleratorStream stream,
        ArrayView<TT> target, ArrayView<TS> source) where TT : unmanaged where TS : unmanaged
    {
        Check.SameLength(target, source, nameof(source));
        if (target.Length == 0) return;
        kernel(stream, Launch.Elementwise(_accelerator, target.Length), target, source);
    }

    /// <summary><c>output = a + b</c>, all of one length; <c>output</c> may alias an input.</summary>
    public void Add(AcceleratorStream stream, ArrayView<float> output, ArrayView<float> a, ArrayView<float> b)
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        _add(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b);
    }

    /// <summary>
    /// <c>output = wa * a + wb * b</c>, all of one length; <c>output</c> may alias an input. With <c>b = a</c> and
    /// <c>wb = 0</c> it scales <c>a</c> (in place when <c>output</c> is <c>a</c>).
    /// </summary>
    public void ScaledAdd(AcceleratorStream stream, ArrayView<float> output, ArrayView<float> a, float wa, ArrayView<float> b, float wb)
    {
        Check.SameLength(output, a, nameof(a));
        Check.SameLength(output, b, nameof(b));
        if (output.Length == 0) return;
        _scaledAdd(stream, Launch.Elementwise(_accelerator, output.Length), output, a, b, wa, wb);
    }

    /// <summary><c>target += source</c>.</summary>
    public void Accumulate(AcceleratorStream stream, ArrayView<float> target, ArrayView<float> source)
    {
        Check.SameLength(target, source, nameof(source));
        if (target.Length == 0) return;
        _accumulate(stream, Launch.Elementwise(_accelerator, target.Length), target, source);
    }
}
