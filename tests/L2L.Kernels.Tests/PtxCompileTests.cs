// Compiles every kernel to PTX for SM_80 without a GPU, so a kernel that would not load on an NVIDIA GPU fails in CI.
using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using L2L.Kernels;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed partial class PtxCompileTests : IDisposable
{
    private static readonly string[] AllowedExterns = ["vprintf", "__assertfail"];
    private readonly Context _context = Context.Create(b => b.Optimize(OptimizationLevel.O2).EnableAlgorithms());
    private readonly PTXBackend _backend;

    public PtxCompileTests()
    {
        _backend = new PTXBackend(_context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_71, null!);
    }

    /// <summary>Every public static method named *Kernel in the kernels assembly.</summary>
    public static TheoryData<string> Kernels()
    {
        var data = new TheoryData<string>();
        foreach (var m in KernelMethods())
            data.Add($"{m.DeclaringType!.Name}.{m.Name}");
        return data;
    }

    private static IEnumerable<MethodInfo> KernelMethods() =>
        AllKernelMethods().Where(m => !m.IsGenericMethodDefinition);

    private static IEnumerable<MethodInfo> AllKernelMethods() =>
        typeof(ResidualKernels).Assembly.GetTypes()
            .Where(t => t.IsPublic && t.IsAbstract && t.IsSealed) // static classes
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal) && m.ReturnType == typeof(void))
            .OrderBy(m => m.DeclaringType!.Name).ThenBy(m => m.Name);

    // The storage types a generic kernel is instantiated with: each (element, storage) pair of type parameters takes
    // every one of these, so FP32, BF16 and FP16 (and their mixtures) are all compiled.
    private static readonly (Type Element, Type Storage)[] StorageTypes =
        [(typeof(float), typeof(Fp32Storage)), (typeof(Bf16), typeof(Bf16Storage)), (typeof(ILGPU.Half), typeof(Fp16Storage))];

    /// <summary>Every instantiation of the generic public *Kernel methods over the storage types.</summary>
    public static IEnumerable<MethodInfo> GenericKernelInstantiations()
    {
        foreach (var m in AllKernelMethods().Where(m => m.IsGenericMethodDefinition))
        {
            var pairs = m.GetGenericArguments().Length / 2;
            var combinations = (int)Math.Pow(StorageTypes.Length, pairs);
            for (var c = 0; c < combinations; c++)
            {
                var args = new Type[2 * pairs];
                for (int p = 0, rest = c; p < pairs; p++, rest /= StorageTypes.Length)
                    (args[2 * p], args[2 * p + 1]) = StorageTypes[rest % StorageTypes.Length];
                yield return m.MakeGenericMethod(args);
            }
        }
    }

    private static string Describe(MethodInfo m) =>
        $"{m.DeclaringType!.Name}.{m.Name}<{string.Join(",", m.GetGenericArguments().Where((_, i) => i % 2 == 0).Select(t => t.Name))}>";

    /// <summary>Names of the generic instantiations, element types only (the storage follows from them).</summary>
    public static TheoryData<string> GenericKernels()
    {
        var data = new TheoryData<string>();
        foreach (var m in GenericKernelInstantiations())
            data.Add(Describe(m));
        return data;
    }

    [Fact]
    public void GenericKernelsAreInstantiatedForEveryStorageType()
    {
        var names = GenericKernelInstantiations().Select(Describe).ToList();
        Assert.Contains("GemmKernels.GemmGenericKernel<Bf16,Single>", names);
        Assert.Contains("GeluKernels.GeluForwardGenericKernel<Half>", names);
        Assert.Equal(names.Count, names.Distinct().Count());
        // Every generic kernel has (element, storage) pairs of type parameters.
        Assert.All(AllKernelMethods().Where(m => m.IsGenericMethodDefinition), m => Assert.True(m.GetGenericArguments().Length % 2 == 0, m.Name));
    }

    [Theory]
    [MemberData(nameof(GenericKernels))]
    public void GenericKernelCompilesToPtxWithoutUnresolvedExterns(string kernel) =>
        AssertCompiles(kernel, GenericKernelInstantiations().Single(m => Describe(m) == kernel));

    [Fact]
    public void KernelDiscoveryFindsTheKernels()
    {
        var names = KernelMethods().Select(m => m.Name).ToList();
        Assert.Contains(nameof(ResidualKernels.ResidualForwardKernel), names);
        Assert.Equal(names.Count, names.Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void CompilesToPtxWithoutUnresolvedExterns(string kernel)
    {
        AssertCompiles(kernel, KernelMethods().Single(m => $"{m.DeclaringType!.Name}.{m.Name}" == kernel));
    }

    private void AssertCompiles(string kernel, MethodInfo method)
    {
        var parameters = method.GetParameters();
        var implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType.Name is "Index1D" or "Index2D" or "Index3D";
        var entry = implicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(method)
            : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var compiled = (PTXCompiledKernel)_backend.Compile(entry, KernelSpecialization.Empty);
        var ptx = compiled.PTXAssembly;
        Assert.Contains(".target sm_80", ptx);
        Assert.Contains(".entry", ptx);
        var unresolved = ExternFunction().Matches(ptx).Select(m => m.Groups[1].Value)
            .Where(name => !AllowedExterns.Contains(name)).Distinct().ToList();
        Assert.True(unresolved.Count == 0, $"{kernel} calls unresolved functions on CUDA: {string.Join(", ", unresolved)}");
    }

    [GeneratedRegex(@"\.extern\s+\.func\s*(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)")]
    private static partial Regex ExternFunction();

    public void Dispose()
    {
        _backend.Dispose();
        _context.Dispose();
    }
}
