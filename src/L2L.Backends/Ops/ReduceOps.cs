// Launchers for whole-array reductions (gradient norms, loss sums) and scaling.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Deterministic sums and sums of squares of whole arrays, and in-place scaling; kernels loaded once per accelerator.
/// The sums also take <see cref="Bf16"/> and <see cref="Half"/> inputs (kernels loaded on first use), widened and
/// accumulated in FP32 into an FP32 result.
/// </summary>
public sealed class ReduceOps
{
    private const int MaxPartials = 1024;

    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _sumPartials;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _sumOfSquaresPartials;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int> _finish;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, float> _scale;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public ReduceOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _sumPartials = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ReduceKernels.SumPartialsKernel);
        _sumOfSquaresPartials = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(ReduceKernels.SumOfSquaresPartialsKernel);
        _finish = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int>(ReduceKernels.FinishSumKernel);
        _scale = _accelerator.LoadKernel<ArrayView<float>, float>(ReduceKernels.ScaleKernel);
        _bf16 = new(() => (
            _accelerator.LoadKernel<ArrayView<Bf16>, ArrayView<float>>(ReduceKernels.SumPartialsGenericKernel<Bf16, Bf16Storage>),
            _accelerator.LoadKernel<ArrayView<Bf16>, ArrayView<float>>(ReduceKernels.SumOfSquaresPartialsGenericKernel<Bf16, Bf16Storage>)));
        _fp16 = new(() => (
            _accelerator.LoadKernel<ArrayView<Half>, ArrayView<float>>(ReduceKernels.SumPartialsGenericKernel<Half, Fp16Storage>),
            _accelerator.LoadKernel<ArrayView<Half>, ArrayView<float>>(ReduceKernels.SumOfSquaresPartialsGenericKernel<Half, Fp16Storage>)));
    }

    private readonly Lazy<(Action<AcceleratorStream, KernelConfig, ArrayView<Bf16>, ArrayView<float>> Sum,
        Action<AcceleratorStream, KernelConfig, ArrayView<Bf16>, ArrayView<float>> SumOfSquares)> _bf16;
    private readonly Lazy<(Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<float>> Sum,
        Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<float>> SumOfSquares)> _fp16;

    /// <summary>The FP32 sum of squares of a BF16 input; as the FP32 overload.</summary>
    public void SumOfSquares(AcceleratorStream s, ArrayView<float> result, ArrayView<Bf16> input, ArrayView<float> partials) =>
        Reduce(s, _bf16.Value.SumOfSquares, result, input, partials);

    /// <summary>The FP32 sum of squares of an FP16 input; as the FP32 overload.</summary>
    public void SumOfSquares(AcceleratorStream s, ArrayView<float> result, ArrayView<Half> input, ArrayView<float> partials) =>
        Reduce(s, _fp16.Value.SumOfSquares, result, input, partials);

    /// <summary>The FP32 sum of squares of an input in the storage type <typeparamref name="T"/> (float, BF16 or FP16); as the typed overloads.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void SumOfSquares<T>(AcceleratorStream s, ArrayView<float> result, ArrayView<T> input, ArrayView<float> partials) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) SumOfSquares(s, result, StorageDispatch.Same<T, float>(input), partials);
        else if (typeof(T) == typeof(Bf16)) SumOfSquares(s, result, StorageDispatch.Same<T, Bf16>(input), partials);
        else if (typeof(T) == typeof(Half)) SumOfSquares(s, result, StorageDispatch.Same<T, Half>(input), partials);
        else throw StorageDispatch.Unsupported<T>();
    }

    /// <summary>The FP32 sum of a BF16 input; as the FP32 overload.</summary>
    public void Sum(AcceleratorStream s, ArrayView<float> result, ArrayView<Bf16> input, ArrayView<float> partials) =>
        Reduce(s, _bf16.Value.Sum, result, input, partials);

    /// <summary>The FP32 sum of an FP16 input; as the FP32 overload.</summary>
    public void Sum(AcceleratorStream s, ArrayView<float> result, ArrayView<Half> input, ArrayView<float> partials) =>
        Reduce(s, _fp16.Value.Sum, result, input, partials);

    /// <summary>The length of the <c>partials</c> scratch buffer that <c>Sum</c> and <c>SumOfSquares</c> need on <paramref name="backend"/>.</summary>
    public static int PartialsLength(Backend backend) => PartialsLengthOn(backend.Accelerator);

    /// <summary>The same length for a device described by its limits (no accelerator needed).</summary>
    public static int PartialsLength(DeviceShape device) => Math.Min(Launch.Elementwise(device, long.MaxValue / 4).GridDim.X, MaxPartials);

    /// <summary>
    /// <c>result[0] = sum of input[i]^2</c> (overwritten). Two stages with a fixed order of additions, so the
    /// same input gives the same bits every time. <c>result</c> (at least 1); <c>partials</c> is scratch of
    /// at least <see cref="PartialsLength(Backend)"/> elements. An empty input gives 0.
    /// </summary>
    public void SumOfSquares(AcceleratorStream s, ArrayView<float> result, ArrayView<float> input, ArrayView<float> partials) =>
        Reduce(s, _sumOfSquaresPartials, result, input, partials);

    /// <summary>
    /// <c>result[0] = sum of input[i]</c> (overwritten), deterministic as <c>SumOfSquares</c>, with
    /// the same scratch rule.
    /// </summary>
    public void Sum(AcceleratorStream s, ArrayView<float> result, ArrayView<float> input, ArrayView<float> partials) =>
        Reduce(s, _sumPartials, result, input, partials);

    /// <summary><c>x *= factor</c>.</summary>
    public void Scale(AcceleratorStream s, ArrayView<float> x, float factor)
    {
        if (x.Length == 0) return;
        _scale(s, Launch.Elementwise(_accelerator, x.Length), x, factor);
    }

    private void Reduce<T>(AcceleratorStream s, Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<float>> partialsKernel,
        ArrayView<float> result, ArrayView<T> input, ArrayView<float> partials) where T : unmanaged
    {
        Check.AtLeast(result, 1, nameof(result));
        Check.AtLeast(partials, PartialsLengthOn(_accelerator), nameof(partials));
        var group = Launch.GroupSize(_accelerator);
        var count = 0;
        if (input.Length > 0)
        {
            var stage1 = Launch.Elementwise(_accelerator, input.Length);
            count = Math.Min(stage1.GridDim.X, MaxPartials);
            partialsKernel(s, new KernelConfig(count, stage1.GroupDim.X), input, partials);
        }
        _finish(s, new KernelConfig(1, group), result, partials, count);
    }

    private static int PartialsLengthOn(Accelerator accelerator) => PartialsLength(DeviceShape.Of(accelerator));
}
